//! The recorded history: one `Op` per client request (invoke and complete times on one
//! monotonic clock, client, kind, key, value, outcome, the node that answered), the final state
//! read after the faults healed, and the shape of the cluster the checker groups writes by.
//! Written out as JSON lines when a schedule fails, so a failure can be studied offline.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The client id of the final reads (after every fault healed and the clients stopped).
pub const FINAL_CLIENT: usize = 9999;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// SET of a unique value on a shared register key.
    Write,
    /// GET of a register key.
    Read,
    /// INCR of a counter key (`value` is the reply: the counter after it).
    Incr,
    /// SADD of a unique element to a set key.
    Sadd,
    /// SET of a key written exactly once (the durability probe: it must be there at the end).
    Unique,
}

impl Kind {
    pub fn is_write(self) -> bool {
        !matches!(self, Kind::Read)
    }
}

/// `Ok`: the reply says it happened (for a `sync` write: acknowledged). `Fail`: it certainly did
/// not happen (refused, never sent). `Unknown`: it may have happened (reply lost, or a `sync`
/// write applied on the primary but not acknowledged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok,
    Fail,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: usize,
    pub kind: Kind,
    pub key: String,
    /// Written value or element; read value (`None`: the key was missing); INCR's reply.
    pub value: Option<String>,
    /// Microseconds since the run started, on the monotonic clock.
    pub invoke_us: u64,
    pub complete_us: u64,
    pub outcome: Outcome,
    /// The node ("ip:port") whose reply decided the outcome.
    pub node: Option<String>,
    pub error: Option<String>,
}

/// What the final reads found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FinalState {
    pub registers: BTreeMap<String, Option<String>>,
    pub counters: BTreeMap<String, Option<i64>>,
    pub sets: BTreeMap<String, Vec<String>>,
    pub uniques: BTreeMap<String, Option<String>>,
    /// Keys whose final read failed (they count as not checked, and fail the run: the checker
    /// cannot vouch for what it could not read).
    pub unreadable: Vec<String>,
}

/// A replica group as it was when the run started: its slot ranges and the nodes in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Shard {
    pub ranges: Vec<(u16, u16)>,
    pub primary: String,
    pub replicas: Vec<String>,
}

impl Shard {
    pub fn holds(&self, slot: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&slot))
    }
}

pub fn to_json_lines(ops: &[Op]) -> String {
    let mut s = String::new();
    for op in ops {
        s.push_str(&serde_json::to_string(op).expect("an Op always serialises"));
        s.push('\n');
    }
    s
}
