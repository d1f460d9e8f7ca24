//! Keyspace commands (generic group): DEL, EXISTS, EXPIRE family, TTL family, RENAME, SCAN, ...

use crate::table::Spec;

pub static COMMANDS: &[Spec] = &[];
