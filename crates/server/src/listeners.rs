//! The client listeners while the server runs: `CONFIG SET port` and `CONFIG SET tls-port` open
//! the new one and close the old one, as Redis 7's `changeListenPort` (0 closes it, so a node
//! can serve TLS only). The bind happens in the command (`Hooks::listen`), so a port that cannot
//! be bound fails the command and the old listener stays; the accept loop (`Server::serve`)
//! then receives the new listener and drops the old one. Connections already open stay open.
//!
//! Process-wide like `crate::tls`'s certificates: a process runs one node.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// A listener to put in place of the one of its kind (`None`: close it).
pub struct Swap {
    pub tls: bool,
    pub listener: Option<std::net::TcpListener>,
}

struct Control {
    /// The address listeners bind (the first word of `bind`).
    bind: String,
    tx: UnboundedSender<Swap>,
}

static CONTROL: Mutex<Option<Control>> = Mutex::new(None);
/// The TLS port bound now (0: none).
static TLS_PORT: AtomicU16 = AtomicU16::new(0);

/// Called once the listeners are bound: where new ones bind, and the TLS port. Returns the
/// channel the accept loop takes new listeners from.
pub fn install(bind: &str, tls_port: u16) -> UnboundedReceiver<Swap> {
    let (tx, rx) = unbounded_channel();
    *CONTROL.lock().expect("listeners lock") = Some(Control {
        bind: bind.to_string(),
        tx,
    });
    TLS_PORT.store(tls_port, Relaxed);
    rx
}

/// The TLS port bound now (0: none): what a replica announces under `tls-replication`.
pub fn tls_port() -> u16 {
    TLS_PORT.load(Relaxed)
}

/// Binds `addr` for a listener, non-blocking.
pub fn bind(addr: &str) -> Result<std::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| format!("could not bind {addr}: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    Ok(l)
}

/// `Hooks::listen`: `name` is `port` or `tls-port`. Binds the new port (0: none) and hands it to
/// the accept loop; returns the port bound (logged when the bind fails, as Redis logs it).
pub fn relisten(name: &str, port: u16) -> Result<u16, String> {
    let tls = name == "tls-port";
    let guard = CONTROL.lock().expect("listeners lock");
    let Some(control) = guard.as_ref() else {
        return Err("the server is not running".into());
    };
    let (listener, bound) = if port == 0 {
        (None, 0)
    } else {
        let l = bind(&format!("{}:{port}", control.bind)).inspect_err(|e| {
            tracing::warn!(error = %e, "Failed to listen on the new {name}");
        })?;
        let bound = l.local_addr().map(|a| a.port()).unwrap_or(port);
        (Some(l), bound)
    };
    control
        .tx
        .send(Swap { tls, listener })
        .map_err(|_| "the server is stopping".to_string())?;
    if tls {
        TLS_PORT.store(bound, Relaxed);
    }
    tracing::info!("{name} changed: now {bound} (0: closed)");
    Ok(bound)
}
