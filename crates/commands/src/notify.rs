//! Keyspace notifications: commands raise events here, and after each command (and each pass of
//! active expiry) the events are published on their Pub/Sub channels, as Redis 7.0 does
//! (`notify.c`): `__keyspace@<db>__:<key>` carries the event name, `__keyevent@<db>__:<event>`
//! carries the key. Which classes are on is `notify-keyspace-events`; the keyspace holds the mask
//! and notes its own events (`new`, `expired`, `evicted`, `keymiss`), the commands note theirs
//! where Redis calls `notifyKeyspaceEvent`, in the same order. Events are published locally only,
//! never across the cluster, as in Redis.

pub use shoal_keyspace::notify::{
    EVICTED, EXPIRED, GENERIC, HASH, KEY_MISS, KEYEVENT, KEYSPACE, LIST, NEW, SET, STREAM, STRING,
    ZSET,
};

use crate::Ctx;
use crate::state::ServerState;

/// Notes `event` on `key` of database `db` if its class is on.
#[inline]
pub fn event(srv: &ServerState, class: u32, event: &'static str, db: usize, key: &[u8]) {
    if srv.ks.notifies(class) {
        shoal_keyspace::notify::push(class, event, db, key);
    }
}

impl Ctx<'_> {
    /// Notes `event` on `key` of the client's database if its class is on.
    #[inline]
    pub fn notify(&self, class: u32, name: &'static str, key: &[u8]) {
        event(self.srv, class, name, self.db(), key);
    }
}

/// An event class never published: modifications that raise no keyspace event in Redis but still
/// invalidate client-side caches (BF.*, whose module signals the key without notifying). Noted
/// only while a client tracks (see `tracking`).
pub const TRACKING_ONLY: u32 = shoal_keyspace::notify::TRACKING;

/// Publishes the events noted on this thread, oldest first. Called with no lock held.
pub fn publish_pending(srv: &ServerState, now_ms: u64) {
    publish_pending_from(srv, now_ms, None);
}

/// [`publish_pending`] for the events of a command `writer` (a client id) ran: the keys they
/// name also invalidate client-side caches (`tracking`), before the events are published.
pub fn publish_pending_from(srv: &ServerState, now_ms: u64, writer: Option<u64>) {
    let events = shoal_keyspace::notify::take();
    if events.is_empty() {
        return;
    }
    crate::tracking::invalidate_events(srv, &events, writer, now_ms);
    let mask = srv.config().notify_keyspace_events.0;
    let mut channel = Vec::new();
    for e in &events {
        // While a client tracks, the keyspace notes every class; publish only the configured.
        if e.class & mask == 0 {
            continue;
        }
        let db = e.db.to_string();
        if mask & KEYSPACE != 0 {
            channel.clear();
            channel.extend_from_slice(b"__keyspace@");
            channel.extend_from_slice(db.as_bytes());
            channel.extend_from_slice(b"__:");
            channel.extend_from_slice(&e.key);
            crate::pubsub::publish_server(srv, &channel, e.event.as_bytes(), now_ms);
        }
        if mask & KEYEVENT != 0 {
            channel.clear();
            channel.extend_from_slice(b"__keyevent@");
            channel.extend_from_slice(db.as_bytes());
            channel.extend_from_slice(b"__:");
            channel.extend_from_slice(e.event.as_bytes());
            crate::pubsub::publish_server(srv, &channel, &e.key, now_ms);
        }
    }
}
