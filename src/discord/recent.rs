//! A set of interaction ids that are held, or remembered until a deadline: the one shape behind
//! both "this process has this question in hand or finished it within a token's lifetime"
//! ([`lifecycle::Active`](crate::question::lifecycle::Active)) and "this signed request was already
//! accepted" (the HTTP endpoint's replay guard).
//!
//! The clock is the caller's (`T` is a tokio `Instant` for one, Unix seconds for the other), so
//! the set is plain data: no timers, no locking, and tests pass `now` explicitly. A held id has
//! no deadline and is never forgotten by [`forget_expired`](RecentIds::forget_expired); only the
//! holder decides when it ends.

use std::collections::{BTreeSet, HashMap};

/// Interaction ids, each either held (no deadline) or remembered until its deadline.
#[derive(Debug)]
pub struct RecentIds<T> {
    /// Id → its deadline, `None` while held.
    ids: HashMap<u64, Option<T>>,
    /// The remembered (not held) ids ordered by deadline, so forgetting the expired is cheap.
    by_deadline: BTreeSet<(T, u64)>,
}

impl<T> Default for RecentIds<T> {
    fn default() -> Self {
        Self {
            ids: HashMap::new(),
            by_deadline: BTreeSet::new(),
        }
    }
}

impl<T: Ord + Copy> RecentIds<T> {
    /// Marks `id` as held; false (and nothing changes) when it is already held or remembered.
    pub fn hold(&mut self, id: u64) -> bool {
        if self.ids.contains_key(&id) {
            return false;
        }
        self.ids.insert(id, None);
        true
    }

    /// Remembers `id` until `deadline` (forgotten once `now >= deadline`), whether or not it was
    /// held; a later deadline replaces an earlier one.
    pub fn remember_until(&mut self, id: u64, deadline: T) {
        if let Some(Some(previous)) = self.ids.insert(id, Some(deadline)) {
            self.by_deadline.remove(&(previous, id));
        }
        self.by_deadline.insert((deadline, id));
    }

    /// Forgets `id` at once, held or remembered.
    pub fn forget(&mut self, id: u64) {
        if let Some(Some(deadline)) = self.ids.remove(&id) {
            self.by_deadline.remove(&(deadline, id));
        }
    }

    /// Forgets every remembered id whose deadline is at or before `now`. Held ids stay.
    pub fn forget_expired(&mut self, now: T) {
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            self.ids.remove(&id);
        }
    }

    /// Whether `id` is held or remembered (expired ones count until they are forgotten).
    pub fn contains(&self, id: u64) -> bool {
        self.ids.contains_key(&id)
    }

    /// How many ids are held or remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is held or remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_taken_once() {
        let mut ids = RecentIds::<u64>::default();
        assert!(ids.hold(1));
        assert!(!ids.hold(1));
        ids.remember_until(1, 10);
        assert!(!ids.hold(1));
        ids.remember_until(2, 10);
        assert!(!ids.hold(2));
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn a_held_id_never_expires() {
        let mut ids = RecentIds::<u64>::default();
        assert!(ids.hold(1));
        ids.forget_expired(u64::MAX);
        assert!(ids.contains(1));
        assert!(!ids.hold(1));
    }

    #[test]
    fn remembered_ids_expire_at_their_deadline() {
        let mut ids = RecentIds::<u64>::default();
        ids.remember_until(1, 10);
        ids.remember_until(2, 20);
        ids.forget_expired(9);
        assert!(ids.contains(1));
        ids.forget_expired(10);
        assert!(!ids.contains(1));
        assert!(ids.contains(2));
        // A forgotten id can be taken again.
        assert!(ids.hold(1));
    }

    #[test]
    fn a_later_deadline_replaces_the_earlier_one() {
        let mut ids = RecentIds::<u64>::default();
        ids.remember_until(1, 10);
        ids.remember_until(1, 30);
        ids.forget_expired(20);
        assert!(ids.contains(1));
        ids.forget_expired(30);
        assert_eq!(ids.len(), 0);
    }

    #[test]
    fn forgetting_drops_held_and_remembered_ids() {
        let mut ids = RecentIds::<u64>::default();
        assert!(ids.hold(1));
        ids.remember_until(2, 10);
        ids.forget(1);
        ids.forget(2);
        assert_eq!(ids.len(), 0);
        // Nothing of id 2 is left to expire later.
        ids.forget_expired(u64::MAX);
        assert!(ids.hold(2));
    }
}
