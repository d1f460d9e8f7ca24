//! The simulator's network: openraft's `RaftNetworkFactory`/`RaftNetwork` for the configuration
//! group's `TypeConfig`, carrying each RPC to the target node's `Raft` handle inside the same
//! process, in virtual time.
//!
//! A message is encoded to JSON and decoded on the other side, as the cluster bus does, so the
//! wire form of every request and reply is exercised. Each one is routed by [`Hub::route`] when
//! it is sent: a node that is down refuses it at once (a connection refused); a node on the other
//! side of a partition is reached by nothing (the sender gives up as the bus's connect timeout or
//! the RPC's deadline says); otherwise the request and its reply each take a seeded latency,
//! sometimes a long one, and each may be lost. Delivery runs in its own task, so a message the
//! sender stopped waiting for still arrives, late and out of order, as on a real network; it is
//! dropped if its target restarted or got cut off meanwhile. A lost message costs the sender its
//! whole deadline, as it would over TCP.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{RPCTypes, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_server::raft::network::{BUS_CONNECT_TIMEOUT_MS, BUS_UNREACHABLE_BACKOFF_MS};
use shoal_server::raft::{BusNode, TypeConfig};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::sim::{Hub, lock};

/// The longest a target may take to handle one delivered request before it is dropped (keeps
/// every delivery task bounded).
const HANDLE_MAX: Duration = Duration::from_secs(10);

/// What happens to one message, decided when it is sent.
pub enum Route {
    /// The target is down: refused at once.
    Down,
    /// A partition is between the two: nothing gets through.
    Cut,
    /// Delivered to `raft` (run `incarnation` of the target) after `out`, replied to after `back`,
    /// unless lost on the way.
    Deliver {
        raft: Raft<TypeConfig>,
        incarnation: u64,
        out: Duration,
        back: Duration,
        lose_request: bool,
        lose_reply: bool,
    },
}

/// Makes one [`Peer`] per target for a node.
pub struct SimNetwork {
    pub me: u64,
    pub hub: Arc<Mutex<Hub>>,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, _node: &BusNode) -> Peer {
        Peer {
            me: self.me,
            target,
            hub: self.hub.clone(),
        }
    }
}

/// openraft's client of one peer.
pub struct Peer {
    me: u64,
    target: u64,
    hub: Arc<Mutex<Hub>>,
}

fn unreachable<E: std::error::Error>(why: &str) -> RPCError<u64, BusNode, RaftError<u64, E>> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other(why.to_string())))
}

impl Peer {
    fn timeout<E: std::error::Error>(
        &self,
        kind: RPCTypes,
        ttl: Duration,
    ) -> RPCError<u64, BusNode, RaftError<u64, E>> {
        RPCError::Timeout(Timeout {
            action: kind,
            id: self.me,
            target: self.target,
            timeout: ttl,
        })
    }

    /// Sends one request and waits for its reply until the RPC's deadline.
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RPCTypes,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BusNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let ttl = option.hard_ttl();
        let deadline = Instant::now() + ttl;
        let body = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let route = lock(&self.hub).route(self.me, self.target);
        let (raft, incarnation, out, back, lose_request, lose_reply) = match route {
            Route::Down => return Err(unreachable("connection refused")),
            Route::Cut => {
                // As over the bus: the connect attempt times out, or the RPC's deadline first.
                let connect = Duration::from_millis(BUS_CONNECT_TIMEOUT_MS);
                tokio::time::sleep(ttl.min(connect)).await;
                return Err(if ttl <= connect {
                    self.timeout(kind, ttl)
                } else {
                    unreachable("connect timed out")
                });
            }
            Route::Deliver {
                raft,
                incarnation,
                out,
                back,
                lose_request,
                lose_reply,
            } => (raft, incarnation, out, back, lose_request, lose_reply),
        };
        let (tx, rx) = oneshot::channel();
        let (hub, from, to) = (self.hub.clone(), self.me, self.target);
        tokio::spawn(async move {
            tokio::time::sleep(out).await;
            if lose_request || !lock(&hub).still_open(from, to, Some(incarnation)) {
                return;
            }
            let Ok(reply) = tokio::time::timeout(HANDLE_MAX, serve(&raft, kind, &body)).await
            else {
                return;
            };
            let reply = match reply {
                Ok(r) => r,
                Err(why) => {
                    lock(&hub).violation(format!("a {kind} request to node {to}: {why}"));
                    return;
                }
            };
            tokio::time::sleep(back).await;
            if lose_reply || !lock(&hub).still_open(from, to, None) {
                return;
            }
            let _ = tx.send(reply);
        });
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => {
                let res: Result<Resp, RaftError<u64, E>> = serde_json::from_slice(&reply)
                    .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(Err(_)) => {
                // Lost: nothing comes back, and the sender waits out its deadline.
                tokio::time::sleep_until(deadline).await;
                Err(self.timeout(kind, ttl))
            }
            Err(_) => Err(self.timeout(kind, ttl)),
        }
    }
}

/// Runs one request on its target, as the bus's server does: JSON in, the JSON of the `Result`
/// out. `Err` is a request that does not decode (a bug: it was encoded from the same type).
async fn serve(raft: &Raft<TypeConfig>, kind: RPCTypes, body: &[u8]) -> Result<Vec<u8>, String> {
    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body).map_err(|e| format!("does not decode: {e}"))
    }
    fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(v).map_err(|e| format!("reply does not encode: {e}"))
    }
    match kind {
        RPCTypes::Vote => {
            let rpc: VoteRequest<u64> = decode(body)?;
            encode(&raft.vote(rpc).await)
        }
        RPCTypes::AppendEntries => {
            let rpc: AppendEntriesRequest<TypeConfig> = decode(body)?;
            encode(&raft.append_entries(rpc).await)
        }
        RPCTypes::InstallSnapshot => {
            let rpc: InstallSnapshotRequest<TypeConfig> = decode(body)?;
            encode(&raft.install_snapshot(rpc).await)
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BusNode, RaftError<u64>>> {
        self.call(RPCTypes::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BusNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BusNode, RaftError<u64>>> {
        self.call(RPCTypes::Vote, &rpc, &option).await
    }

    /// The bus's back-off after an unreachable peer.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(
            BUS_UNREACHABLE_BACKOFF_MS,
        )))
    }
}
