//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! SCAFFOLD: being implemented; the table is empty until then.

use crate::table::Spec;

pub static COMMANDS: &[Spec] = &[];
