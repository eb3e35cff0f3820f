//! Commits the feed reports before their announcement is heard.
//!
//! A writer commits, then bumps the users' generations in Redis and announces them (`invalidate`). A replica's
//! feed reader can see the commit in between (or for ever, if the writer died there); a watcher told of the
//! event that then re-reads through the cache must not get the state from before it. So before the hub hands
//! out a batch, [`Cache::committed`] hides the batch's users' L1 entries and, unless their announcement was
//! heard since the previous read of the feed began (it then came after their commit), stops trusting their
//! Redis values until it is heard, for at most the longest freshness a value can have (by then every value
//! loaded before the commit has gone stale).

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Cache;

/// Users remembered at most, in each of the two maps (an evicted "unannounced" mark only costs the guarantee
/// for that user; an evicted "announced" time only costs a needless distrust).
const REMEMBERED: u64 = 200_000;

/// Who was announced when, and who has a commit not yet announced: shared with the listener.
#[derive(Clone)]
pub(super) struct Announcements {
    heard: moka::sync::Cache<Uuid, Instant>,
    unannounced: moka::sync::Cache<Uuid, ()>,
}

impl Announcements {
    /// For values that are fresh for at most `longest`.
    pub(super) fn new(longest: Duration) -> Self {
        fn map<V: Clone + Send + Sync + 'static>(longest: Duration) -> moka::sync::Cache<Uuid, V> {
            moka::sync::Cache::builder().max_capacity(REMEMBERED).time_to_live(longest).build()
        }
        Announcements { heard: map(longest), unannounced: map(longest) }
    }

    /// The listener heard `user` announced: its writes so far are in Redis.
    pub(super) fn heard(&self, user: Uuid) {
        self.heard.insert(user, Instant::now());
        self.unannounced.invalidate(&user);
    }

    /// A writer announced `user` without bumping the generation (its Redis call failed): Redis values of the
    /// user may be from before its write until the next bumped announcement, or for one freshness at most.
    pub(super) fn not_bumped(&self, user: Uuid) {
        self.unannounced.insert(user, ());
    }

    /// Whether Redis may be missing a committed write of `user`.
    pub(super) fn unannounced(&self, user: &Uuid) -> bool {
        self.unannounced.contains_key(user)
    }
}

impl Cache {
    /// The feed shows commits of `users` that were not visible when the previous read of it began (`since`;
    /// `None`: no previous read to go by). See the module docs.
    pub fn committed(&self, users: &[Uuid], since: Option<Instant>) {
        if !self.inner.settings.enabled {
            return;
        }
        let announcements = &self.inner.announcements;
        for user in users {
            self.inner.epochs.bump(*user);
            let heard_after = since.zip(announcements.heard.get(user)).is_some_and(|(since, heard)| heard >= since);
            if !heard_after && self.inner.redis.is_some() {
                announcements.unannounced.insert(*user, ());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_distrusted_until_announced_unless_announced_since_the_previous_read() {
        let a = Announcements::new(Duration::from_secs(5));
        let user = Uuid::new_v4();
        a.unannounced.insert(user, ());
        assert!(a.unannounced(&user));
        a.heard(user);
        assert!(!a.unannounced(&user), "hearing the announcement ends the distrust");
        assert!(a.heard.get(&user).is_some());
    }
}
