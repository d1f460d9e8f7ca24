//! List commands (LPUSH, LPOP, ... LMPOP).
//!
//! SCAFFOLD: being implemented; the table is empty until then.

use crate::table::Spec;

pub static COMMANDS: &[Spec] = &[];
