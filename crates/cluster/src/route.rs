//! Where a request goes: served here, redirected (`-MOVED`, `-ASK`), or refused (`-CROSSSLOT`,
//! `-TRYAGAIN`, `-CLUSTERDOWN`), decided from the configuration and the slots of the request's
//! keys, in the order Redis Cluster decides it (`getNodeByQuery`).

use crate::Config;

/// What the caller knows about the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteRequest {
    /// The command writes (a replica never serves it).
    pub write: bool,
    /// The connection sent `ASKING` just before (or the command is `ASKING`-flagged).
    pub asking: bool,
    /// The connection sent `READONLY`: a replica serves reads of its primary's slots.
    pub readonly: bool,
}

/// The keys of a request that live in a moving slot, as found in this node's keyspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Presence {
    pub present: usize,
    pub missing: usize,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Serve it here.
    Local,
    /// `-MOVED slot addr`: the slot belongs to another node.
    Moved { slot: u16, addr: String },
    /// `-ASK slot addr`: the slot is moving and the keys are not here (any more).
    Ask { slot: u16, addr: String },
    /// `-CROSSSLOT`: the keys are in different slots.
    CrossSlot,
    /// `-TRYAGAIN`: a multi-key request on a moving slot whose keys are split between the nodes.
    TryAgain,
    /// `-CLUSTERDOWN Hash slot not served`.
    Unbound,
    /// `-CLUSTERDOWN The cluster is down`: not every slot has an owner.
    Down,
}

/// Decides where a request whose keys are in `slots` (one entry per key, in order) goes, on the
/// node `me`. `presence` is asked only for a slot moving away from `me` or towards it.
pub fn route(
    cfg: &Config,
    me: &str,
    slots: &[u16],
    req: RouteRequest,
    presence: impl FnOnce() -> Presence,
) -> Route {
    let Some(&slot) = slots.first() else {
        return Route::Local;
    };
    if slots.iter().any(|&s| s != slot) {
        return Route::CrossSlot;
    }
    let Some(owner) = cfg.owner(slot) else {
        return Route::Unbound;
    };
    if cfg.slots_assigned() < crate::SLOTS {
        return Route::Down;
    }
    let moving_to = cfg.migrating_to(slot);
    if owner.id == me {
        if let Some(target) = moving_to {
            let p = presence();
            if p.missing > 0 {
                return if p.present > 0 {
                    Route::TryAgain
                } else {
                    Route::Ask {
                        slot,
                        addr: target.addr(),
                    }
                };
            }
        }
        return Route::Local;
    }
    if req.asking && moving_to.is_some_and(|t| t.id == me) {
        let p = presence();
        if slots.len() > 1 && p.missing > 0 {
            return Route::TryAgain;
        }
        return Route::Local;
    }
    if req.readonly
        && !req.write
        && cfg.node(me).and_then(|n| n.replica_of.as_deref()) == Some(owner.id.as_str())
    {
        return Route::Local;
    }
    Route::Moved {
        slot,
        addr: owner.addr(),
    }
}
