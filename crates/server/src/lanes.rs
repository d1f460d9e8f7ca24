//! Connection lanes: every client connection lives on one lane, a tokio runtime with a single
//! worker thread and its own I/O driver (epoll instance) and timers; there are `threads` lanes.
//!
//! Why not one runtime with `threads` workers: there the workers share one I/O driver, so the
//! worker that polled it wakes another (a futex call and a context switch) to steal half of the
//! ready connections, tick after tick, and a connection's task wanders between cores. On a lane,
//! the worker that owns a connection is the one blocked in its `epoll_wait`: a busy lane never
//! wakes another, and a connection's buffers stay in one core's cache. The cost is no stealing:
//! a connection stays on its lane for its life, so the accept loop hands each new one to the lane
//! with the fewest open connections. Each lane's runtime is still multi-threaded (with one
//! worker), so a long script can hand the lane's duties to another thread (`block_in_place`,
//! `conn::offload_long_script`) and the lane's other clients are answered `-BUSY` meanwhile.

use shoal_commands::multi::ExecGate;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinSet;

use crate::ServerState;

/// The lanes' runtimes, owned by `Server::run`.
pub struct Lanes {
    runtimes: Vec<Runtime>,
    handles: LaneHandles,
}

/// Open connections of one lane, on its own cache line (each connection's start and end write it).
#[derive(Default)]
#[repr(align(128))]
struct LaneLoad(AtomicUsize);

/// What the accept loop needs of the lanes: where to run a new connection.
#[derive(Clone)]
pub struct LaneHandles {
    handles: Arc<[Handle]>,
    open: Arc<[LaneLoad]>,
}

impl Lanes {
    /// Starts `count` lanes (at least one). A lane's worker keeps its hold on the exec gate
    /// between commands and leaves it when it goes idle (`ExecGate::set_sticky_thread`).
    pub fn build(state: &Arc<ServerState>, count: usize) -> Result<Lanes, String> {
        let count = count.max(1);
        let mut runtimes = Vec::with_capacity(count);
        for _ in 0..count {
            let parking = state.clone();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("shoal-worker")
                .on_thread_park(move || {
                    ExecGate::set_sticky_thread(true);
                    parking.gate.release_thread();
                })
                .enable_all()
                .build()
                .map_err(|e| format!("runtime: {e}"))?;
            runtimes.push(rt);
        }
        let handles = LaneHandles {
            handles: runtimes.iter().map(|rt| rt.handle().clone()).collect(),
            open: (0..count).map(|_| LaneLoad::default()).collect(),
        };
        Ok(Lanes { runtimes, handles })
    }

    pub fn handles(&self) -> LaneHandles {
        self.handles.clone()
    }

    /// Stops every lane, giving its tasks up to `grace` to finish.
    pub fn shutdown(self, grace: Duration) {
        for rt in self.runtimes {
            rt.shutdown_timeout(grace);
        }
    }
}

/// Takes one off a lane's count when the connection's task ends (or is dropped unfinished).
struct Leaving {
    open: Arc<[LaneLoad]>,
    lane: usize,
}

impl Drop for Leaving {
    fn drop(&mut self) {
        self.open[self.lane].0.fetch_sub(1, Relaxed);
    }
}

impl LaneHandles {
    /// Moves `stream` (accepted on another runtime) to the lane with the fewest open connections
    /// and runs `serve` there with it registered on that lane's driver (or with the error that
    /// refused it; the stream is then closed). The task joins `tasks`.
    pub fn spawn<F, Fut>(
        &self,
        tasks: &mut JoinSet<()>,
        stream: tokio::net::TcpStream,
        serve: F,
    ) -> std::io::Result<()>
    where
        F: FnOnce(std::io::Result<tokio::net::TcpStream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let lane = (0..self.open.len())
            .min_by_key(|&i| self.open[i].0.load(Relaxed))
            .unwrap_or(0);
        // Leaves the accepting runtime's driver; the lane's task registers it on its own.
        let stream = stream.into_std()?;
        self.open[lane].0.fetch_add(1, Relaxed);
        let leaving = Leaving {
            open: self.open.clone(),
            lane,
        };
        tasks.spawn_on(
            async move {
                let _leaving = leaving;
                serve(tokio::net::TcpStream::from_std(stream)).await;
            },
            &self.handles[lane],
        );
        Ok(())
    }
}
