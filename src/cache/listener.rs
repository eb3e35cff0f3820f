//! Hearing other replicas' invalidations, so the in-process L1 can keep values for the whole freshness TTL.
//!
//! **Mechanism: Redis pub/sub, not server-assisted client-side caching.** Both were weighed
//! (`../shared/research/client-side-caching.md`, read against fred 10.1's source):
//! - `CLIENT TRACKING … BCAST` would report every change of a generation key with no extra command per write.
//!   But with fred 10.1 it has to be rebuilt by hand: tracking is not re-armed after a reconnect, BCAST is sent to
//!   one node of a cluster only (each node reports only the keys it owns, so every primary, and every primary
//!   after a failover, must be armed separately), the RESP3 "flush" push is dropped, and `Pool` has no tracking.
//! - Pub/sub needs one `PUBLISH` per invalidation, pipelined with the generation bumps (one round trip either
//!   way), and misses changes made by anything but this service: nothing else writes these keys. In exchange a
//!   classic `PUBLISH` reaches subscribers on every node of a cluster whatever the topology, and fred's
//!   `SubscriberClient` survives reconnects; the gaps (a message lost while disconnected) are closed the same
//!   way tracking would need: flush the L1.
//!
//! So: pub/sub on one dedicated connection per replica, on the channel `<prefix>:invalidations`; a message is a
//! comma-separated list of user ids, led by `nb` ([`NOT_BUMPED`]) when the writer could not bump their
//! generations: the receivers then must not trust those users' Redis values either (an older replica skips the
//! `nb`, which is no id, and treats the rest as before).
//!
//! **Knowing that we hear.** Every replica publishes a heartbeat on the channel every `heartbeat` (250 ms) and
//! counts itself as hearing only while its *own* heartbeats come back within the lease (1 s): that proves the
//! whole path (publish, Redis, this subscription) end to end, including silent partitions a dead TCP connection
//! would hide. While not hearing, the L1 falls back to its short TTL. Whenever messages may have been missed (a
//! reconnect, the receive buffer overflowing, or heartbeats that stopped and came back) the L1 is flushed before
//! the L1 is trusted again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::{Builder, Config, ReconnectPolicy};
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::stored::now_ms;

/// The first item of an announcement whose generations were not bumped.
pub(super) const NOT_BUMPED: &str = "nb";

/// What the listener does to the cache when it hears something.
pub(super) trait Invalidations: Send + Sync + 'static {
    /// Other replicas changed these users' data.
    fn users(&self, users: &[Uuid]);
    /// … and could not bump their generations: their Redis values may be from before the change.
    fn not_bumped(&self, users: &[Uuid]);
    /// Messages may have been lost: forget everything held in-process.
    fn flush(&self);
}

/// Whether this replica currently hears every invalidation.
#[derive(Debug)]
pub(super) struct Hearing {
    subscribed: AtomicBool,
    /// When our own last heartbeat came back.
    last_heartbeat_ms: AtomicI64,
    lease_ms: i64,
    /// Heartbeats this replica sent, to recognise its own.
    sent: AtomicU64,
    /// Messages heard and flushes done, for the metrics.
    pub(super) messages: AtomicU64,
    pub(super) flushes: AtomicU64,
}

impl Hearing {
    /// True while subscribed and our own heartbeat came back within the lease.
    pub(super) fn now(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
            && now_ms() - self.last_heartbeat_ms.load(Ordering::Acquire) < self.lease_ms
    }
}

/// The listener's settings.
#[derive(Debug, Clone)]
pub(super) struct ListenerSettings {
    pub(super) channel: String,
    pub(super) heartbeat: Duration,
    pub(super) lease: Duration,
    pub(super) timeout: Duration,
}

/// Starts listening (in the background: start-up never waits for Redis) and returns the hearing state. The
/// subscription and the heartbeats have connections of their own, apart from the request pool's.
pub(super) fn start(
    config: Config,
    settings: ListenerSettings,
    cache: impl Invalidations,
) -> Result<Arc<Hearing>, fred::error::Error> {
    let publisher = Builder::from_config(config.clone())
        .with_performance_config(|p| p.default_command_timeout = settings.timeout)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(1);
            c.internal_command_timeout = Duration::from_secs(1);
            c.max_command_attempts = 1;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .build()?;
    let subscriber = Builder::from_config(config)
        .with_performance_config(|p| {
            // A burst of invalidations must not overflow the receive buffer (an overflow costs an L1 flush).
            p.broadcast_channel_capacity = 4096;
            p.default_command_timeout = settings.timeout;
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(1);
            c.internal_command_timeout = Duration::from_secs(1);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
        .build_subscriber_client()?;
    let hearing = Arc::new(Hearing {
        subscribed: AtomicBool::new(false),
        last_heartbeat_ms: AtomicI64::new(0),
        lease_ms: i64::try_from(settings.lease.as_millis()).unwrap_or(i64::MAX),
        sent: AtomicU64::new(0),
        messages: AtomicU64::new(0),
        flushes: AtomicU64::new(0),
    });
    let id = Uuid::new_v4().simple().to_string();
    tokio::spawn(listen(subscriber, settings.clone(), hearing.clone(), id.clone(), cache));
    tokio::spawn(heartbeat(publisher, settings, hearing.clone(), id));
    Ok(hearing)
}

/// A heartbeat message: `hb:<replica id>`.
fn heartbeat_message(id: &str) -> String {
    format!("hb:{id}")
}

async fn heartbeat(publisher: Client, settings: ListenerSettings, hearing: Arc<Hearing>, id: String) {
    let message = heartbeat_message(&id);
    let _connection = publisher.connect();
    loop {
        tokio::time::sleep(settings.heartbeat).await;
        hearing.sent.fetch_add(1, Ordering::Relaxed);
        let publish = publisher.publish::<i64, _, _>(settings.channel.as_str(), message.as_str());
        // A failed heartbeat needs no handling here: it simply does not come back, and the lease runs out.
        let _ = tokio::time::timeout(settings.timeout, publish).await;
    }
}

async fn listen(
    subscriber: SubscriberClient,
    settings: ListenerSettings,
    hearing: Arc<Hearing>,
    id: String,
    cache: impl Invalidations,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let mut errors = subscriber.error_rx();
    let _connection = subscriber.connect();
    let own = heartbeat_message(&id);
    let mut failing = false;
    loop {
        // Also fired on the first connect (once per node of a cluster), and on connection errors. Anything
        // published while disconnected is lost: (re-)subscribe, flush, and only then trust the L1 again.
        let event = tokio::select! {
            reconnect = reconnects.recv() => reconnect.map(|_| ()),
            error = errors.recv() => error.map(|_| ()),
            message = messages.recv() => {
                match message {
                    Ok(message) if *message.channel == *settings.channel => {
                        if let Some(text) = message.value.as_str() {
                            heard(&text, &own, &hearing, &cache);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "cache invalidation messages overflowed: flushing L1");
                        cache.flush();
                        hearing.flushes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => break,
                }
                continue;
            }
        };
        match event {
            Err(RecvError::Closed) => break,
            Err(RecvError::Lagged(_)) | Ok(()) => {}
        }
        hearing.subscribed.store(false, Ordering::Release);
        match subscriber.subscribe(settings.channel.as_str()).await {
            Ok(()) => {
                cache.flush();
                hearing.flushes.fetch_add(1, Ordering::Relaxed);
                hearing.subscribed.store(true, Ordering::Release);
                if std::mem::take(&mut failing) {
                    tracing::info!(channel = %settings.channel, "listening for cache invalidations again");
                }
            }
            // Once per outage: fred retries on its own, and says so at debug level.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot subscribe to cache invalidations: L1 keeps entries briefly only");
            }
            Err(e) => tracing::debug!(error = %e, "still cannot subscribe to cache invalidations"),
        }
    }
    hearing.subscribed.store(false, Ordering::Release);
}

/// One message on the channel: our own heartbeat, another replica's, or users to invalidate.
fn heard(text: &str, own: &str, hearing: &Hearing, cache: &impl Invalidations) {
    if text == own {
        let now = now_ms();
        let previous = hearing.last_heartbeat_ms.swap(now, Ordering::AcqRel);
        if now - previous >= hearing.lease_ms {
            // Our heartbeats stopped coming back for a while: messages may have been missed.
            cache.flush();
            hearing.flushes.fetch_add(1, Ordering::Relaxed);
        }
    } else if !text.starts_with("hb:") {
        hearing.messages.fetch_add(1, Ordering::Relaxed);
        let users: Vec<Uuid> = text.split(',').filter_map(|u| Uuid::try_parse(u).ok()).collect();
        cache.users(&users);
        if text.split(',').next() == Some(NOT_BUMPED) {
            cache.not_bumped(&users);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Heard {
        users: Mutex<Vec<Uuid>>,
        not_bumped: Mutex<Vec<Uuid>>,
    }

    impl Invalidations for Arc<Heard> {
        fn users(&self, users: &[Uuid]) {
            self.users.lock().unwrap().extend_from_slice(users);
        }
        fn not_bumped(&self, users: &[Uuid]) {
            self.not_bumped.lock().unwrap().extend_from_slice(users);
        }
        fn flush(&self) {}
    }

    #[test]
    fn an_announcement_led_by_nb_says_the_generations_were_not_bumped() {
        let hearing = Hearing {
            subscribed: AtomicBool::new(true),
            last_heartbeat_ms: AtomicI64::new(now_ms()),
            lease_ms: 1_000,
            sent: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        };
        let heard_by = Arc::new(Heard::default());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        heard(&format!("{a}"), "hb:me", &hearing, &heard_by);
        heard(&format!("{NOT_BUMPED},{b}"), "hb:me", &hearing, &heard_by);
        heard("hb:other", "hb:me", &hearing, &heard_by);
        assert_eq!(*heard_by.users.lock().unwrap(), vec![a, b]);
        assert_eq!(*heard_by.not_bumped.lock().unwrap(), vec![b]);
    }
}
