//! A connection's asynchronous wait for the exec gate (see `shoal_commands::multi::ExecGate`):
//! a request that meets another thread's batch of scripts, or a script still under
//! `busy-reply-threshold`, is `Paused`; its connection waits here without its worker thread and
//! is woken by the gate's release (the gate's `on_release` hook), so the waiting worker's core
//! is free for other work (on a small machine, for the clients themselves) instead of spinning.

use std::time::Duration;

use shoal_commands::state::ServerState;
use tokio::sync::Notify;

/// Woken at every release of an exec gate that connections wait for. One for the process: the
/// servers of one test process share it (a wake-up of another server's waiters only makes them
/// look again).
static GATE_RELEASED: Notify = Notify::const_new();

/// The longest a waiter sleeps without a wake-up before it looks again: a running script passes
/// `busy-reply-threshold` without releasing the gate (its waiters then get `-BUSY`).
const GATE_WAIT_POLL: Duration = Duration::from_millis(1);

/// The gate's `on_release` hook: wakes one waiter (waking them all would have all but one find
/// the gate taken again); a woken waiter passes the wake-up on ([`wait_for_gate`]).
pub fn gate_released() {
    GATE_RELEASED.notify_one();
}

/// Whether a request must wait for a script: one runs (below the threshold), or another thread
/// holds the gate for a batch of them between two.
pub fn script_wait(srv: &ServerState) -> bool {
    srv.scripts.busy.waiting(srv) || (srv.gate.batch_elsewhere() && !srv.scripts.busy.active())
}

/// After a request that waited ran: if it left the gate free (it was no script, which would
/// hold the gate until its batch ends and wake the next waiter then), the next waiter looks.
pub fn after_waited_run(srv: &ServerState) {
    if srv.gate.waiters() > 0 && !srv.gate.batch_here() && !script_wait(srv) {
        GATE_RELEASED.notify_one();
    }
}

/// Waits until [`script_wait`] no longer holds, the gate was released, or [`GATE_WAIT_POLL`]
/// passed (the caller looks again in every case).
pub async fn wait_for_gate(srv: &ServerState) {
    let released = GATE_RELEASED.notified();
    tokio::pin!(released);
    released.as_mut().enable();
    srv.gate.add_waiter();
    // Looked at after counting in: a release since then wakes this waiter.
    if script_wait(srv) {
        tokio::select! {
            _ = released => {}
            _ = tokio::time::sleep(GATE_WAIT_POLL) => {}
        }
    }
    srv.gate.remove_waiter();
}
