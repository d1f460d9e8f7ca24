//! Server commands.

use crate::Args;
use crate::state::{Client, ServerState};
use crate::table::Spec;

pub static COMMANDS: &[Spec] = &[];

pub fn record_slow(
    _srv: &ServerState,
    _c: &Client,
    _spec: &Spec,
    _args: &Args<'_>,
    _us: u64,
    _now_ms: u64,
) {
}
