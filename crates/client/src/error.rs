//! The client's errors, typed by who must act: a reply error is the server's answer to one
//! request (the connection goes on); a redirect names where the key lives; a timeout or a lost
//! connection means the request's fate is unknown and the connection was dropped.

use std::fmt;

/// Everything a request can end in besides its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The server answered with an error reply (`-ERR ...`, `-WRONGTYPE ...`), given whole
    /// without the leading `-`.
    Reply(String),
    /// `-MOVED slot addr` or `-ASK slot addr`: the key's slot is served elsewhere.
    Redirect { ask: bool, slot: u16, addr: String },
    /// No reply within the configured time; the connection was dropped.
    Timeout,
    /// The connection failed or closed (connect refused, reset, EOF); it is reconnected with
    /// backoff on next use.
    Connection(String),
    /// The server sent bytes that are not RESP; the connection was dropped.
    Protocol(String),
    /// A reply of an unexpected shape for the typed call that made it.
    UnexpectedReply(String),
    /// The loader given to `get_or_load` failed.
    Loader(String),
    /// The node's circuit breaker is open after failures in a row: the request was not sent.
    CircuitOpen,
}

impl Error {
    /// Whether the request may not have reached the server or its reply was lost (retrying a
    /// non-idempotent write may apply it twice).
    pub fn is_connection_level(&self) -> bool {
        matches!(
            self,
            Error::Timeout | Error::Connection(_) | Error::Protocol(_)
        )
    }

    /// Whether the node could not be used at all (connection-level, or its breaker is open):
    /// what `get_or_load` falls back on.
    pub fn is_unavailable(&self) -> bool {
        self.is_connection_level() || *self == Error::CircuitOpen
    }

    /// Whether the failure is expected to pass on its own (a failover, a node restarting, a slot
    /// moving): connection-level, an open breaker, or the server's `-CLUSTERDOWN`, `-TRYAGAIN`
    /// or `-LOADING`. [`ClusterClient`](crate::ClusterClient) retries these within
    /// [`Config::retry_budget`](crate::Config::retry_budget).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Reply(t) => ["CLUSTERDOWN ", "TRYAGAIN ", "LOADING "]
                .iter()
                .any(|p| t.starts_with(p)),
            e => e.is_unavailable(),
        }
    }

    /// Reads a redirect from an error reply's text.
    pub(crate) fn from_reply(text: String) -> Error {
        let mut it = text.split(' ');
        let kind = it.next().unwrap_or("");
        if (kind == "MOVED" || kind == "ASK")
            && let (Some(slot), Some(addr)) = (it.next().and_then(|s| s.parse().ok()), it.next())
        {
            return Error::Redirect {
                ask: kind == "ASK",
                slot,
                addr: addr.to_string(),
            };
        }
        Error::Reply(text)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Reply(t) => write!(f, "server replied: {t}"),
            Error::Redirect { ask, slot, addr } => {
                let k = if *ask { "ASK" } else { "MOVED" };
                write!(f, "{k} {slot} {addr}")
            }
            Error::Timeout => f.write_str("timed out"),
            Error::Connection(m) => write!(f, "connection: {m}"),
            Error::Protocol(m) => write!(f, "protocol: {m}"),
            Error::UnexpectedReply(m) => write!(f, "unexpected reply: {m}"),
            Error::Loader(m) => write!(f, "loader: {m}"),
            Error::CircuitOpen => f.write_str("circuit breaker open"),
        }
    }
}

impl std::error::Error for Error {}

/// The client's result type.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_told_from_other_errors() {
        assert_eq!(
            Error::from_reply("MOVED 3999 127.0.0.1:6381".into()),
            Error::Redirect {
                ask: false,
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            }
        );
        assert!(matches!(
            Error::from_reply("ASK 1 h:1".into()),
            Error::Redirect { ask: true, .. }
        ));
        assert_eq!(
            Error::from_reply("MOVED nonsense".into()),
            Error::Reply("MOVED nonsense".into())
        );
        let transient = |t: &str| Error::from_reply(t.into()).is_transient();
        assert!(transient("CLUSTERDOWN The cluster is down"));
        assert!(transient(
            "TRYAGAIN Multiple keys request during rehashing of slot"
        ));
        assert!(transient("LOADING Redis is loading the dataset in memory"));
        assert!(!transient("ERR wrong number of arguments"));
        assert!(!transient("MOVED 1 h:1"));
        assert!(Error::CircuitOpen.is_transient() && Error::Timeout.is_transient());
    }
}
