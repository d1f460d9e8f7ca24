//! MIGRATE's I/O: the keys the command read are sent to the target with `RESTORE-ASKING` (so the
//! target takes them for a slot it is importing), then each is deleted here, but only if it still
//! has the version it was read with. A key written meanwhile is read again and sent again (with
//! REPLACE), at most [`MIGRATE_RETRIES`] times; a key deleted meanwhile is deleted on the target
//! too. So a write that races the move is never lost, without blocking the node while the
//! target answers (Redis blocks its whole server for a MIGRATE). The connection is TLS when
//! `tls-cluster` is on, as Redis's `migrateGetSocket`.

use std::sync::Arc;
use std::time::Duration;

use crate::links::request;
use crate::now_ms;
use crate::tls::LinkStream;
use shoal_commands::ServerState;
use shoal_commands::keys::{MigrateItem, MigrateRequest, migrate_item};
use shoal_keyspace::key_slot;
use shoal_resp::Reply;

/// Times a key that keeps changing is sent again before MIGRATE gives up on it.
pub const MIGRATE_RETRIES: usize = 3;

const ERR_CONNECT: &str = "IOERR error or timeout connecting to the client";
const ERR_READ: &str = "IOERR error or timeout reading to target instance";

/// Runs a MIGRATE; `Err` holds the reply's error line (without `-`).
pub async fn run(srv: &Arc<ServerState>, req: MigrateRequest) -> Result<(), String> {
    let timeout = Duration::from_millis(req.timeout_ms);
    let tls = crate::tls::cluster_links(&srv.config());
    let mut s = match LinkStream::connect(&req.host, req.port, tls, timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(target = %format!("{}:{}", req.host, req.port), error = %e, "MIGRATE: cannot reach the target");
            return Err(ERR_CONNECT.into());
        }
    };
    let call = async |s: &mut LinkStream, args: &[&[u8]]| -> Result<(), String> {
        match request(s, args, timeout).await {
            Err(_) => Err(ERR_READ.into()),
            Ok(Reply::Error(e)) => Err(format!("ERR Target instance replied with error: {e}")),
            Ok(_) => Ok(()),
        }
    };
    match &req.auth {
        Some((None, pass)) => call(&mut s, &[b"AUTH", pass.as_bytes()]).await?,
        Some((Some(user), pass)) => {
            call(&mut s, &[b"AUTH", user.as_bytes(), pass.as_bytes()]).await?
        }
        None => {}
    }
    if req.dest_db != 0 {
        call(&mut s, &[b"SELECT", req.dest_db.to_string().as_bytes()]).await?;
    }
    for first in req.items {
        let mut item: MigrateItem = first;
        let mut replace = req.replace;
        let mut tries = 0;
        loop {
            let ttl = item.ttl_ms.to_string();
            let mut args: Vec<&[u8]> =
                vec![b"RESTORE-ASKING", &item.key, ttl.as_bytes(), &item.payload];
            if replace {
                args.push(b"REPLACE");
            }
            call(&mut s, &args).await?;
            if req.copy {
                break;
            }
            match remove_if_unchanged(srv, req.source_db, &item) {
                Settled::Removed => break,
                Settled::Gone => {
                    // Deleted here meanwhile: not to come back from the target.
                    call(&mut s, &[b"ASKING"]).await?;
                    call(&mut s, &[b"DEL", &item.key]).await?;
                    break;
                }
                Settled::Changed(again) => {
                    tries += 1;
                    if tries > MIGRATE_RETRIES {
                        return Err(format!(
                            "ERR key '{}' kept changing while it was migrated; try again",
                            String::from_utf8_lossy(&item.key)
                        ));
                    }
                    item = again;
                    // The target holds the copy sent before.
                    replace = true;
                }
            }
        }
    }
    Ok(())
}

/// What became of a key after its copy reached the target.
enum Settled {
    Removed,
    Gone,
    Changed(MigrateItem),
}

/// Deletes `item`'s key here if it still has the version that was sent (and sends the deletion
/// to replicas).
fn remove_if_unchanged(srv: &ServerState, db: usize, item: &MigrateItem) -> Settled {
    let now = now_ms();
    let slot = key_slot(&item.key);
    let settled = {
        let mut shard = srv.ks.lock(srv.ks.shard_of(slot));
        match shard.peek_any(db, slot, &item.key).map(|e| e.version()) {
            Some(v) if v == item.version => {
                drop(shard.remove(db, slot, &item.key));
                shard.note(shoal_commands::notify::GENERIC, "del", db, &item.key);
                Settled::Removed
            }
            Some(_) => match migrate_item(&mut shard, db, &item.key, now) {
                Some(again) => Settled::Changed(again),
                None => Settled::Gone,
            },
            None => Settled::Gone,
        }
    };
    shoal_commands::effects::emit_logged(srv, now);
    shoal_commands::notify::publish_pending(srv, now);
    settled
}
