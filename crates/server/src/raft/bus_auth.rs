//! How the cluster bus is secured: TLS (`tls-cluster`) and a shared secret (`cluster-secret`)
//! proven by a challenge in both directions, never sent.
//!
//! The challenge, on every new bus connection before any Raft request:
//!
//! ```text
//! client -> RAFT HELLO <nc>              nc: 32 random bytes, hex
//! server -> <ns> <HMAC(secret, "shoal-bus-server" nc ns)>
//! client -> RAFT PROVE <HMAC(secret, "shoal-bus-client" nc ns)>
//! server -> OK
//! ```
//!
//! Each side proves it holds the secret over a nonce the other chose, so a recorded exchange
//! replays nowhere, and the two proofs are labelled so one cannot be reflected as the other. A
//! server with a secret refuses every other request on a connection that has not proven it (and
//! logs why); a client whose server fails its proof drops the connection (and logs why). A node
//! without a secret answers HELLO with an error, so a secret on one side only fails too.
//!
//! The settings are process-wide, set once when the node starts its bus (a process runs one node).

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Refusals are logged at most this often (a refused peer retries every few hundred ms).
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 10_000;

/// What the bus asks of its connections.
#[derive(Clone, Default)]
pub struct BusSecurity {
    /// TLS on accepted and outgoing bus connections.
    pub tls: bool,
    /// The shared secret's key, when `cluster-secret` is set.
    pub key: Option<hmac::Key>,
}

static SECURITY: RwLock<Option<BusSecurity>> = RwLock::new(None);

/// Sets the bus's security from `tls-cluster` and `cluster-secret`.
pub fn configure(tls: bool, secret: &str) {
    let key = (!secret.is_empty()).then(|| hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()));
    *SECURITY.write().expect("bus security lock") = Some(BusSecurity { tls, key });
}

/// The bus's security (none until [`configure`]).
pub fn security() -> BusSecurity {
    SECURITY
        .read()
        .expect("bus security lock")
        .clone()
        .unwrap_or_default()
}

/// A fresh nonce.
pub fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    SystemRandom::new()
        .fill(&mut n)
        .expect("the OS random source works");
    n
}

fn transcript(label: &[u8], nc: &[u8], ns: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(label.len() + nc.len() + ns.len());
    t.extend_from_slice(label);
    t.extend_from_slice(nc);
    t.extend_from_slice(ns);
    t
}

const SERVER_LABEL: &[u8] = b"shoal-bus-server";
const CLIENT_LABEL: &[u8] = b"shoal-bus-client";

/// The server's proof over both nonces.
pub fn server_proof(key: &hmac::Key, nc: &[u8], ns: &[u8]) -> Vec<u8> {
    hmac::sign(key, &transcript(SERVER_LABEL, nc, ns))
        .as_ref()
        .to_vec()
}

/// The client's proof over both nonces.
pub fn client_proof(key: &hmac::Key, nc: &[u8], ns: &[u8]) -> Vec<u8> {
    hmac::sign(key, &transcript(CLIENT_LABEL, nc, ns))
        .as_ref()
        .to_vec()
}

/// Checks the server's proof (in constant time).
pub fn check_server(key: &hmac::Key, nc: &[u8], ns: &[u8], proof: &[u8]) -> bool {
    hmac::verify(key, &transcript(SERVER_LABEL, nc, ns), proof).is_ok()
}

/// Checks the client's proof (in constant time).
pub fn check_client(key: &hmac::Key, nc: &[u8], ns: &[u8], proof: &[u8]) -> bool {
    hmac::verify(key, &transcript(CLIENT_LABEL, nc, ns), proof).is_ok()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

static LAST_REFUSAL_LOG_MS: AtomicU64 = AtomicU64::new(0);

/// Logs a refused or failed authentication, at most once per [`REFUSAL_LOG_INTERVAL_MS`].
pub fn log_refusal(peer: &str, why: &str) {
    let now = crate::now_ms();
    let last = LAST_REFUSAL_LOG_MS.load(Relaxed);
    if now.saturating_sub(last) >= REFUSAL_LOG_INTERVAL_MS
        && LAST_REFUSAL_LOG_MS
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
    {
        tracing::warn!(%peer, reason = why, "cluster bus: authentication failed; connection refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_check_only_with_the_same_secret_and_nonces() {
        let k = hmac::Key::new(hmac::HMAC_SHA256, b"s3cret");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"other");
        let (nc, ns) = (nonce(), nonce());
        assert_ne!(nc, ns);
        let sp = server_proof(&k, &nc, &ns);
        assert!(check_server(&k, &nc, &ns, &sp));
        assert!(!check_server(&other, &nc, &ns, &sp));
        assert!(!check_server(&k, &ns, &nc, &sp));
        // A server's proof is no client's proof (no reflection).
        assert!(!check_client(&k, &nc, &ns, &sp));
        let cp = client_proof(&k, &nc, &ns);
        assert!(check_client(&k, &nc, &ns, &cp));
        assert_eq!(unhex(hex(&cp).as_bytes()).unwrap(), cp);
        assert!(unhex(b"zz").is_none());
    }
}
