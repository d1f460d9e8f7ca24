//! RESP2/RESP3 wire format for shoal: the incremental request decoder, the reply encoder, and the
//! reply parser that internal links and tools use as clients.
//!
//! No I/O, no async, no allocation proportional to untrusted lengths before the bytes arrive, and no
//! panics on any input (checked by a property test and a cargo-fuzz target).

pub mod decode;
pub mod encode;
pub mod reply;

pub use decode::{Decoded, Limits, ProtocolError, RequestDecoder, split_args};
pub use encode::{Protocol, ReplyWriter, decimal_len, fmt_double, fmt_i64, fmt_u64, push_u64};
pub use reply::{Reply, ReplyLimits, encode_request, parse_reply};
