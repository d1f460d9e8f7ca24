//! Replication (DESIGN.md §4): the snapshot format, the links between a primary and its replicas
//! (full and partial resynchronisation, the effect stream, acknowledgements), and verification.
//! The replication state itself (role, ids, offsets, backlog) is plain data in
//! `shoal_commands::repl`, so commands such as ROLE and WAIT can read it without I/O.

pub mod snapshot;
