//! Waiters: the calls waiting for a resource's state to change, keyed by the resource, woken by
//! the [`Wake`]s an apply returns (see `plinth_core::Wake`). A waiter looks at the state again
//! only when its own resource changed: an apply that touches nothing waited on costs nothing
//! more than a look in an empty table, however many calls wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use plinth_core::Wake;
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Waiters {
    /// One notifier per resource someone waits on; gone when its last waiter is.
    slots: Mutex<HashMap<Wake, Arc<Notify>>>,
}

/// One caller's place in the table; leaving it (dropping this) removes the resource's entry
/// when nobody else waits on it.
pub(crate) struct Waiting<'a> {
    waiters: &'a Waiters,
    wake: Wake,
    /// `None` only while dropping: the place is given back under the table's lock.
    notify: Option<Arc<Notify>>,
}

impl Waiters {
    fn slots(&self) -> MutexGuard<'_, HashMap<Wake, Arc<Notify>>> {
        // The table holds plain values, each inserted or removed whole.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place among the waiters on `wake`.
    pub(crate) fn wait_on(&self, wake: Wake) -> Waiting<'_> {
        let notify = Arc::clone(self.slots().entry(wake.clone()).or_default());
        Waiting {
            waiters: self,
            wake,
            notify: Some(notify),
        }
    }

    /// Wakes every caller waiting on one of `woken`.
    pub(crate) fn wake(&self, woken: &[Wake]) {
        if woken.is_empty() {
            return;
        }
        let slots = self.slots();
        for wake in woken {
            if let Some(notify) = slots.get(wake) {
                notify.notify_waiters();
            }
        }
    }

    /// Wakes every waiter: the state was replaced by a snapshot, or the node is stopping.
    pub(crate) fn wake_all(&self) {
        for notify in self.slots().values() {
            notify.notify_waiters();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }
}

impl Waiting<'_> {
    /// Resolves at the next wake of this resource after it is enabled. Enable it, then look at
    /// the state, then await it: a wake between the look and the await is not lost.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.as_ref().expect("held until dropped").notified()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut slots = self.waiters.slots();
        // Given back under the lock, so that two waiters leaving at once cannot each see the
        // other's place and both leave the entry behind.
        drop(self.notify.take());
        if slots
            .get(&self.wake)
            .is_some_and(|notify| Arc::strong_count(notify) == 1)
        {
            slots.remove(&self.wake);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_waiter_is_woken_by_its_resource_only_and_leaves_no_entry_behind() {
        let waiters = Waiters::default();
        let queue = Wake::Queue("q".into());
        let waiting = waiters.wait_on(queue.clone());
        let other = waiters.wait_on(queue.clone());
        assert_eq!(waiters.len(), 1);
        {
            let mut notified = std::pin::pin!(waiting.notified());
            notified.as_mut().enable();
            // A wake of another resource does not wake it; a wake of its own, given before the
            // await, is kept.
            waiters.wake(&[Wake::Queue("other".into()), Wake::Schedules]);
            waiters.wake(std::slice::from_ref(&queue));
            tokio::time::timeout(Duration::from_secs(1), notified)
                .await
                .expect("woken");
            let mut quiet = std::pin::pin!(waiting.notified());
            quiet.as_mut().enable();
            waiters.wake(&[Wake::Lock("q".into())]);
            assert!(
                tokio::time::timeout(Duration::from_millis(50), quiet)
                    .await
                    .is_err(),
                "woken by another resource"
            );
        }
        drop(waiting);
        assert_eq!(waiters.len(), 1, "another still waits on it");
        drop(other);
        assert_eq!(waiters.len(), 0);
    }
}
