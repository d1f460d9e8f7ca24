//! The I/O of active-active peer links (`active-peers`): one task per configured peer pulls the
//! peer's replication stream as a replica would (`PSYNC` with the peer's replication id and our
//! offset in its stream, so a link that dropped continues from the peer's backlog), merges every
//! `SHOALMERGE` effect into this node (`shoal_commands::active::apply_remote`) and acknowledges
//! its offset. When the peer cannot continue (`+FULLRESYNC`: it restarted, or our offset left its
//! backlog), the keyspace snapshot that follows is skipped and the peer's merge states are read
//! instead, page by page with `ACTIVESYNC` on a second connection; merging is idempotent, so the
//! states and the stream from the new offset may overlap. Every member pulls from every other:
//! a member's backlog holds only its own writes, so nothing is relayed and nothing loops.
//!
//! Both connections go over TLS when `tls-replication` is on (the peers' addresses are then
//! their TLS ports) and authenticate as a replica does (`masteruser`/`masterauth`); a peer that
//! refuses us is logged and retried with backoff, and nothing of it is merged.

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use shoal_commands::ServerState;
use shoal_commands::active::{self as act, PeerStatus};
use shoal_replication::snapshot::Loader;
use shoal_replication::stream;
use shoal_resp::{Decoded, Reply, RequestDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::links::{BACKOFF_MAX_MS, BACKOFF_MIN_MS, READ_CHUNK_BYTES, Transport, request};
use crate::now_ms;

/// How often the configured peers are compared with the running links.
pub const SUPERVISE_MS: u64 = 200;
/// A handshake step (or an `ACTIVESYNC` page) answered later than this fails the session.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// A peer silent this long (it pings every second while we are attached) is considered gone.
pub const PEER_SILENCE_MS: u64 = 10_000;
/// Acknowledge at least this often.
pub const ACK_INTERVAL_MS: u64 = 1_000;
/// A `+FULLRESYNC`/`+CONTINUE` line longer than this is garbage.
pub const LINE_BYTES_MAX: usize = 1024;
/// Unparsed stream bytes held at most (a frame is at most a key and its merge state).
pub const INPUT_BYTES_MAX: usize = 1 << 30;
/// The stream buffer grows by a chunk when less than this is free for the next read.
pub const READ_SPARE_MIN_BYTES: usize = 16 * 1024;

/// The configured peers: `host:port` words of `active-peers`.
pub fn parse_peers(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| split_addr(w).is_some())
        .map(str::to_string)
        .collect()
}

fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (h, p) = addr.rsplit_once(':')?;
    Some((h, p.parse().ok()?))
}

/// Starts and stops peer links as `active-peers` changes, until the server is gone.
pub async fn supervise<T: Transport + Clone>(srv: Weak<ServerState>, t: T) {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Where each peer's stream was left, kept while a peer is dropped from the list and added
    // back (a partition healed by configuration continues from the peer's backlog).
    let positions: Positions = Arc::default();
    // What we last reported merging of each peer's stream.
    let mut reported: std::collections::HashMap<u64, u64> = Default::default();
    let mut passes = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(SUPERVISE_MS)).await;
        let Some(srv) = srv.upgrade() else { return };
        if srv.shutting_down.load(Relaxed) {
            return;
        }
        let peers = parse_peers(&srv.config().active_peers);
        if srv.active.is_on() {
            report_and_collect(&srv, &peers, &mut reported, passes);
            passes += 1;
        }
        srv.active
            .peers
            .lock()
            .expect("peers lock")
            .retain(|a, _| peers.contains(a));
        for addr in peers {
            if running.lock().expect("running lock").insert(addr.clone()) {
                tokio::spawn(run_peer(
                    srv.clone(),
                    t.clone(),
                    addr,
                    running.clone(),
                    positions.clone(),
                ));
            }
        }
    }
}

/// Collection passes run once per this many supervision rounds (about once a second).
pub const COLLECT_EVERY_ROUNDS: u64 = 5;

/// Tells the peers, in our stream, how far we merged each of their streams (`SHOALSEEN`), and
/// collects the tombstones every member has merged.
fn report_and_collect(
    srv: &ServerState,
    peers: &[String],
    reported: &mut std::collections::HashMap<u64, u64>,
    passes: u64,
) {
    let links: Vec<(u64, u64)> = {
        let status = srv.active.peers.lock().expect("peers lock");
        peers
            .iter()
            .filter_map(|a| status.get(a))
            .filter(|s| !s.replid.is_empty())
            .map(|s| (act::stream_id(&s.replid), s.offset))
            .collect()
    };
    let mut out = Vec::new();
    for &(stream, offset) in &links {
        if reported.get(&stream) != Some(&offset) {
            act::encode_seen(&mut out, stream, offset);
            reported.insert(stream, offset);
        }
    }
    if !out.is_empty() {
        srv.repl.append(&out);
    }
    // Seeds yield to the group's states; once every peer's were merged, those left are ours.
    let all_merged = {
        let status = srv.active.peers.lock().expect("peers lock");
        !peers.is_empty()
            && peers.iter().all(|a| {
                status
                    .get(a)
                    .is_some_and(|s| s.full_syncs + s.partial_syncs > 0)
            })
    };
    if all_merged {
        act::promote_provisional(srv);
    }
    // Only with every configured peer known: a member we never heard from may hold anything.
    if passes.is_multiple_of(COLLECT_EVERY_ROUNDS) && links.len() == peers.len() {
        let streams: Vec<u64> = links.iter().map(|l| l.0).collect();
        act::collect_tombstones(srv, &streams);
    }
}

fn configured(srv: &ServerState, addr: &str) -> bool {
    !srv.shutting_down.load(Relaxed)
        && srv
            .config()
            .active_peers
            .split_whitespace()
            .any(|w| w == addr)
}

fn status(srv: &ServerState, addr: &str, f: impl FnOnce(&mut PeerStatus)) {
    let mut peers = srv.active.peers.lock().expect("peers lock");
    f(peers.entry(addr.to_string()).or_default());
}

type Positions = Arc<Mutex<std::collections::HashMap<String, Position>>>;

/// Where we are in a peer's stream: its replication id (`None`: never synced) and our offset.
#[derive(Debug, Default, Clone)]
struct Position {
    replid: Option<String>,
    offset: u64,
    /// Whether the last session got as far as streaming (the backoff starts over).
    streamed: bool,
}

async fn run_peer<T: Transport>(
    srv: Arc<ServerState>,
    t: T,
    addr: String,
    running: Arc<Mutex<HashSet<String>>>,
    positions: Positions,
) {
    let mut pos = positions
        .lock()
        .expect("positions lock")
        .get(&addr)
        .cloned()
        .unwrap_or_default();
    let mut backoff = BACKOFF_MIN_MS;
    while configured(&srv, &addr) {
        status(&srv, &addr, |s| s.state = "connecting");
        pos.streamed = false;
        let end = session(&srv, &t, &addr, &mut pos).await;
        let why = match end {
            Ok(()) => "peer removed".to_string(),
            Err(e) => e,
        };
        tracing::warn!(peer = %addr, error = %why, "active-active peer link down; retrying");
        status(&srv, &addr, |s| {
            s.state = "down";
            s.last_error = why;
        });
        if pos.streamed {
            backoff = BACKOFF_MIN_MS;
        }
        positions
            .lock()
            .expect("positions lock")
            .insert(addr.clone(), pos.clone());
        if !configured(&srv, &addr) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX_MS);
    }
    running.lock().expect("running lock").remove(&addr);
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, b: &[u8]) -> Result<(), String> {
    if b.is_empty() {
        return Ok(());
    }
    s.write_all(b).await.map_err(|e| e.to_string())?;
    // A TLS stream may keep records it could not send yet until flushed.
    s.flush().await.map_err(|e| e.to_string())
}

/// Reads until a whole line is buffered; returns it (without CRLF) and leaves the rest in `buf`.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<String, String> {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 2);
            if line.is_empty() {
                // Keep-alive newlines before the reply.
                continue;
            }
            return Ok(line);
        }
        if buf.len() > LINE_BYTES_MAX {
            return Err("reply line too long".into());
        }
        let n = tokio::time::timeout(
            Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
            s.read(&mut chunk),
        )
        .await
        .map_err(|_| "peer did not answer".to_string())?
        .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("peer closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `AUTH` with `masteruser`/`masterauth`, if a password is set.
pub(crate) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &ServerState,
    s: &mut S,
) -> Result<(), String> {
    let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    let (user, pass) = {
        let cfg = srv.config();
        (cfg.masteruser.clone(), cfg.masterauth.clone())
    };
    if !pass.is_empty() {
        let r = if user.is_empty() {
            request(s, &[b"AUTH", pass.as_bytes()], timeout).await?
        } else {
            request(s, &[b"AUTH", user.as_bytes(), pass.as_bytes()], timeout).await?
        };
        if !r.is_ok() {
            return Err(format!("authentication with the peer failed: {r:?}"));
        }
    }
    Ok(())
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &ServerState,
    s: &mut S,
) -> Result<(), String> {
    let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    authenticate(srv, s).await?;
    let port = crate::links::listening_port(srv).to_string();
    let r = request(
        s,
        &[b"REPLCONF", b"listening-port", port.as_bytes()],
        timeout,
    )
    .await?;
    if !r.is_ok() {
        return Err(format!("REPLCONF refused: {r:?}"));
    }
    Ok(())
}

async fn session<T: Transport>(
    srv: &Arc<ServerState>,
    t: &T,
    addr: &str,
    pos: &mut Position,
) -> Result<(), String> {
    let (host, port) = split_addr(addr).ok_or("bad peer address")?;
    let mut s = t
        .connect(host, port)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    handshake(srv, &mut s).await?;
    let (id, off) = match &pos.replid {
        Some(id) => (id.clone(), pos.offset.to_string()),
        None => ("?".to_string(), "-1".to_string()),
    };
    let mut req = Vec::new();
    shoal_resp::encode_request(&mut req, &[b"PSYNC", id.as_bytes(), off.as_bytes()]);
    write(&mut s, &req).await?;
    let mut inbuf = Vec::new();
    let line = read_line(&mut s, &mut inbuf).await?;
    if let Some(rest) = line.strip_prefix("+FULLRESYNC ") {
        let mut parts = rest.split_whitespace();
        let (Some(id), Some(Ok(offset))) = (parts.next(), parts.next().map(str::parse::<u64>))
        else {
            return Err(format!("bad FULLRESYNC line: {line}"));
        };
        status(srv, addr, |st| st.state = "sync");
        skip_snapshot(srv, &mut s, &mut inbuf).await?;
        // From here on, our place in the peer's stream is the snapshot's offset; the merge
        // states read next cover everything before it (and maybe some after: merging twice is
        // harmless).
        pos.replid = Some(id.to_string());
        pos.offset = offset;
        fetch_states(srv, t, host, port).await?;
        // Counted once the peer's states are all merged (seeds wait for that).
        status(srv, addr, |st| st.full_syncs += 1);
        tracing::info!(peer = %addr, "active-active full resync: merged the peer's states");
    } else if let Some(rest) = line.strip_prefix("+CONTINUE") {
        if let Some(id) = rest.split_whitespace().next() {
            pos.replid = Some(id.to_string());
        }
        status(srv, addr, |st| st.partial_syncs += 1);
        tracing::info!(peer = %addr, offset = pos.offset, "active-active partial resync: the peer continues from our offset");
    } else {
        return Err(format!("PSYNC refused: {line}"));
    }
    pos.streamed = true;
    status(srv, addr, |st| {
        st.state = "connected";
        st.replid = pos.replid.clone().unwrap_or_default();
        st.offset = pos.offset;
        st.last_error.clear();
    });
    stream_loop(srv, &mut s, addr, pos, inbuf).await
}

/// Reads past the keyspace snapshot of a full resync (its records are not merge states).
async fn skip_snapshot<S: AsyncRead + Unpin>(
    srv: &ServerState,
    s: &mut S,
    inbuf: &mut Vec<u8>,
) -> Result<(), String> {
    let mut loader = Loader::new(srv.ks.databases());
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut data = std::mem::take(inbuf);
    loop {
        if !data.is_empty() {
            let done = loader
                .feed(&data, |_| {})
                .map_err(|e| format!("snapshot: {e}"))?;
            if let Some(used) = done {
                *inbuf = data[used..].to_vec();
                return Ok(());
            }
        }
        let n = tokio::time::timeout(Duration::from_millis(PEER_SILENCE_MS), s.read(&mut chunk))
            .await
            .map_err(|_| "peer silent during the full resync".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("peer closed the connection".into());
        }
        data = chunk[..n].to_vec();
    }
}

/// Reads every merge state of the peer (`ACTIVESYNC`, shard by shard, page by page) and merges
/// them here.
async fn fetch_states<T: Transport>(
    srv: &Arc<ServerState>,
    t: &T,
    host: &str,
    port: u16,
) -> Result<(), String> {
    let mut s = t
        .connect(host, port)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let timeout = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    authenticate(srv, &mut s).await?;
    for shard in 0..srv.ks.shard_count() {
        let shard_text = shard.to_string();
        let mut cursor: Vec<u8> = Vec::new();
        loop {
            let mut args: Vec<&[u8]> = vec![b"ACTIVESYNC", shard_text.as_bytes()];
            if !cursor.is_empty() {
                args.push(&cursor);
            }
            let r = request(&mut s, &args, timeout).await?;
            let Reply::Array(Some(parts)) = r else {
                return Err(format!("ACTIVESYNC refused: {r:?}"));
            };
            let [Reply::Bulk(Some(next)), Reply::Array(Some(items))] = parts.as_slice() else {
                return Err("malformed ACTIVESYNC reply".into());
            };
            for triple in items.chunks(3) {
                let [
                    Reply::Bulk(Some(db)),
                    Reply::Bulk(Some(key)),
                    Reply::Bulk(Some(state)),
                ] = triple
                else {
                    return Err("malformed ACTIVESYNC item".into());
                };
                if let Some(floor) = db.strip_prefix(b"F") {
                    // A database's flush floor (see `act::dump_shard`).
                    let (db, at) =
                        act::parse_floor(floor, state).ok_or("malformed ACTIVESYNC floor")?;
                    act::apply_flush(srv, Some(db), at, now_ms());
                    continue;
                }
                let db = std::str::from_utf8(db)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or("malformed ACTIVESYNC db")?;
                act::apply_remote(srv, db, key, state, None, now_ms())?;
            }
            if next.is_empty() {
                break;
            }
            cursor = next.clone();
        }
    }
    Ok(())
}

/// Merges the peer's stream until the link fails.
async fn stream_loop<S: AsyncRead + AsyncWrite + Unpin>(
    srv: &Arc<ServerState>,
    s: &mut S,
    addr: &str,
    pos: &mut Position,
    mut inbuf: Vec<u8>,
) -> Result<(), String> {
    let mut decoder = RequestDecoder::default();
    let mut ranges = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(ACK_INTERVAL_MS));
    let mut last_read = now_ms();
    let mut ack = Vec::new();
    // Bytes that came with the PSYNC reply are stream too.
    let mut fresh = !inbuf.is_empty();
    loop {
        if fresh {
            fresh = false;
            let stream = act::stream_id(pos.replid.as_deref().unwrap_or_default());
            let (used, effects, lag) =
                apply_frames(srv, &mut decoder, &mut ranges, &inbuf, stream, pos.offset)?;
            inbuf.drain(..used);
            decoder.shift(used, &mut ranges);
            pos.offset += used as u64;
            if inbuf.len() > INPUT_BYTES_MAX {
                return Err("a stream frame over the input limit".into());
            }
            // Give memory back once a frame larger than the buffer has been merged, so an idle
            // link holds one chunk whatever it carried before.
            if inbuf.capacity() > READ_CHUNK_BYTES && inbuf.len() < READ_CHUNK_BYTES / 2 {
                inbuf.shrink_to(READ_CHUNK_BYTES);
            }
            ack.clear();
            stream::encode_ack(&mut ack, pos.offset);
            write(s, &ack).await?;
            status(srv, addr, |st| {
                // Also after the entry was dropped and made again (the peer was removed from
                // the list and added back while this session ran).
                st.state = "connected";
                st.replid = pos.replid.clone().unwrap_or_default();
                st.offset = pos.offset;
                st.effects += effects;
                st.last_io_ms = last_read;
                if let Some(l) = lag {
                    st.lag_ms = l;
                }
            });
        }
        if !configured(srv, addr) {
            return Ok(());
        }
        // Reads go straight into the buffer's free room; it grows only when a partial frame
        // leaves less than READ_SPARE_MIN_BYTES of it (a frame nearly as large as the buffer).
        if inbuf.capacity() - inbuf.len() < READ_SPARE_MIN_BYTES {
            inbuf.reserve(READ_CHUNK_BYTES);
        }
        tokio::select! {
            r = s.read_buf(&mut inbuf) => {
                let n = r.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("peer closed the connection".into());
                }
                last_read = now_ms();
                srv.stats.total_net_repl_input_bytes.fetch_add(n as u64, Relaxed);
                fresh = true;
            }
            _ = tick.tick() => {
                if now_ms().saturating_sub(last_read) > PEER_SILENCE_MS {
                    return Err("peer silent for too long".into());
                }
                ack.clear();
                stream::encode_ack(&mut ack, pos.offset);
                write(s, &ack).await?;
            }
        }
    }
}

/// Merges every whole frame of `buf` (the peer's stream `stream` from `offset`); returns the
/// bytes used, the effects merged and the lag of the newest (ms from its version to now).
fn apply_frames(
    srv: &ServerState,
    decoder: &mut RequestDecoder,
    ranges: &mut Vec<std::ops::Range<usize>>,
    buf: &[u8],
    stream: u64,
    offset: u64,
) -> Result<(usize, u64, Option<u64>), String> {
    let mut pos = 0;
    let mut effects = 0;
    let mut lag = None;
    loop {
        match decoder.decode(buf, pos, ranges) {
            Ok(Decoded::Frame { end, inline }) => {
                if inline {
                    return Err("an inline frame in the stream".into());
                }
                let args: Vec<&[u8]> = ranges.iter().map(|r| &buf[r.clone()]).collect();
                if let Some((db, key, state)) = act::parse_merge(&args) {
                    let now = now_ms();
                    let mark = act::Mark {
                        stream,
                        offset: offset + end as u64,
                    };
                    let top = act::apply_remote(srv, db, key, state, Some(mark), now)?;
                    lag = Some(now.saturating_sub(shoal_keyspace::hlc::version_ms(top)));
                    effects += 1;
                }
                if let Some((db, at)) = act::parse_flush(&args) {
                    act::apply_flush(srv, db, at, now_ms());
                    effects += 1;
                }
                if let Some((origin, merged)) = act::parse_seen(&args) {
                    act::note_seen(srv, stream, origin, merged);
                }
                // Anything else (keep-alive pings, a flush or swap, functions) is not merged:
                // it is this peer's own business.
                pos = end;
            }
            Ok(Decoded::Empty { end }) => pos = end,
            Ok(Decoded::Incomplete) => break,
            Err(e) => return Err(format!("garbage in the stream: {}", e.0)),
        }
    }
    Ok((pos, effects, lag))
}
