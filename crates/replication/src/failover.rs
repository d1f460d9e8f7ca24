//! Coordinated failover (`FAILOVER [TO host port] [TIMEOUT ms] [FORCE]`, as in Redis 6.2): pause
//! writes, wait until the chosen replica has acknowledged everything, tell it to take over
//! (`REPLICAOF NO ONE`), then follow it as a replica. Nothing acknowledged is lost: writes are paused
//! while the replica catches up, and the old primary resumes from the new one by partial resync
//! (the promoted node keeps the old replication id as its second id).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use shoal_commands::ServerState;
use shoal_commands::repl::FailoverRequest;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::now_ms;

/// Time to catch up when FAILOVER has no TIMEOUT.
pub const CATCH_UP_DEFAULT_MS: u64 = 10_000;

fn set_state(srv: &ServerState, s: &'static str) {
    *srv.repl.failover.state.lock().expect("failover lock") = s;
}

fn finish(srv: &ServerState, outcome: &str) {
    srv.repl.writes_paused_until_ms.store(0, Relaxed);
    set_state(srv, "no-failover");
    srv.repl.failover.in_progress.store(false, Relaxed);
    tracing::warn!(outcome, "failover finished");
}

async fn send(stream: &mut BufReader<TcpStream>, args: &[&str]) -> Result<String, String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
    }
    stream
        .get_mut()
        .write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut line))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(line.trim_end().to_string())
}

pub async fn run(srv: Arc<ServerState>, req: FailoverRequest) {
    let timeout_ms = if req.timeout_ms == 0 {
        CATCH_UP_DEFAULT_MS
    } else {
        req.timeout_ms
    };
    let deadline = now_ms() + timeout_ms;
    // Writes wait (in the connection loop) while paused; the pause outlasts the catch-up window a
    // little so the hand-over itself is covered.
    srv.repl
        .writes_paused_until_ms
        .store(deadline + 5_000, Relaxed);
    set_state(&srv, "waiting-for-sync");
    let target = {
        let replicas = srv.repl.replicas.lock().expect("replicas lock").clone();
        match &req.to {
            Some((host, port)) => replicas.into_iter().find(|r| {
                r.listening_port.load(Relaxed) == *port as u64
                    && (r.ip == *host || host == "localhost")
            }),
            None => replicas
                .into_iter()
                .max_by_key(|r| r.ack_offset.load(Relaxed)),
        }
    };
    let Some(target) = target else {
        finish(&srv, "aborted: target replica not found");
        return;
    };
    // Wait for the replica to acknowledge everything written before the pause.
    loop {
        if srv.repl.failover.abort.load(Relaxed) {
            finish(&srv, "aborted by FAILOVER ABORT");
            return;
        }
        let end = srv.repl.backlog.lock().expect("backlog lock").end_offset();
        if target.ack_offset.load(Relaxed) >= end {
            break;
        }
        if now_ms() >= deadline {
            if !req.force {
                finish(&srv, "aborted: replica did not catch up before the timeout");
                return;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    set_state(&srv, "failover-in-progress");
    let host = target.ip.clone();
    let port = target.listening_port.load(Relaxed) as u16;
    let promoted = async {
        let s = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let mut s = BufReader::new(s);
        let pass = {
            let cfg = srv.config();
            if cfg.masterauth.is_empty() {
                cfg.requirepass.clone()
            } else {
                cfg.masterauth.clone()
            }
        };
        if !pass.is_empty() {
            send(&mut s, &["AUTH", &pass]).await?;
        }
        let r = send(&mut s, &["REPLICAOF", "NO", "ONE"]).await?;
        if r.starts_with("+OK") { Ok(()) } else { Err(r) }
    }
    .await;
    if let Err(e) = promoted {
        finish(
            &srv,
            &format!("aborted: could not promote {host}:{port}: {e}"),
        );
        return;
    }
    let epoch = shoal_commands::replication::become_replica(&srv, host.clone(), port);
    tokio::spawn(crate::replica::run(srv.clone(), host.clone(), port, epoch));
    finish(&srv, &format!("{host}:{port} is the new primary"));
}
