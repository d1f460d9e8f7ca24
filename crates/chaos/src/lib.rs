//! shoal-chaos: the fault-injection suite. It starts a real cluster (`harness`), injects faults
//! on a seeded schedule (`nemesis`, `net`, `fakeclock`), records what clients saw (`workload`,
//! `history`), and judges the history (`checker`, `linear`). `run` ties one schedule together; `main.rs` is
//! the command line. See README.md for the commands and what each number means.

pub mod checker;
pub mod client;
pub mod fakeclock;
pub mod harness;
pub mod history;
pub mod linear;
pub mod nemesis;
pub mod net;
pub mod resp;
pub mod rng;
pub mod run;
pub mod slots;
pub mod workload;
