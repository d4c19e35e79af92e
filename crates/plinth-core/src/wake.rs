//! Wake: whom an apply woke. A caller that waits for the state to change (a long-polling
//! receive, a queued acquire, an election observer, a config or registry watch, a claim) waits
//! on the resource it cares about; an apply that changes that resource names it, and only its
//! waiters look at the state again. Nobody's check runs on every apply.
//!
//! A wake is a hint, never a promise: it is sent when something *may* now be true (a message
//! may be receivable), and the waiter checks. A missing wake would leave a caller waiting until
//! its timeout, so each primitive sends one wherever its state changes in a way a waiter
//! watches, and errs on the side of more.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Wake {
    /// A message of this queue may be receivable now, or the queue is gone.
    Queue(String),
    /// This lock's holders, waiters or value changed: queued acquires (granted, or out of
    /// time) and election observers (a new leader or value).
    Lock(String),
    /// This service's config has a new version.
    Config(String),
    /// An instance of this service came, changed or went.
    Registry(String),
    /// A run of some schedule may be claimable now.
    Schedules,
}
