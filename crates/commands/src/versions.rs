//! shoal's versioned commands.

use crate::table::Spec;

pub static COMMANDS: &[Spec] = &[];
