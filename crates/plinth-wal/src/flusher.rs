//! Group commit: the queue of flush callbacks and the thread that serves them with shared fsyncs.

use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::WalError;
use crate::wal::Shared;

/// Called once everything appended before it was queued is durable.
pub(crate) type FlushCallback = Box<dyn FnOnce(Result<(), WalError>) + Send + 'static>;

/// Callbacks waiting for the next sync.
#[derive(Default)]
pub(crate) struct FlushQueue {
    inner: Mutex<Pending>,
    wakeup: Condvar,
}

#[derive(Default)]
struct Pending {
    callbacks: Vec<FlushCallback>,
    shutdown: bool,
}

impl FlushQueue {
    /// Queues `done`; if the flusher already stopped, `done` gets `Closed` at once.
    pub(crate) fn push(&self, done: FlushCallback) {
        let mut pending = self.lock();
        if pending.shutdown {
            drop(pending);
            done(Err(WalError::Closed));
            return;
        }
        pending.callbacks.push(done);
        drop(pending);
        self.wakeup.notify_one();
    }

    /// Asks the flusher to serve what is queued and then exit.
    pub(crate) fn shut_down(&self) {
        self.lock().shutdown = true;
        self.wakeup.notify_one();
    }

    /// Blocks until callbacks are queued; `None` once shut down and drained.
    fn take_batch(&self) -> Option<Vec<FlushCallback>> {
        let mut pending = self.lock();
        while pending.callbacks.is_empty() && !pending.shutdown {
            pending = self
                .wakeup
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.callbacks.is_empty() {
            return None;
        }
        Some(mem::take(&mut pending.callbacks))
    }

    // Callbacks never run under this lock, so a poisoned lock only means a
    // panic between two plain Vec operations; the queue is still coherent.
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The flusher thread's body. Every callback in a batch was queued before the
/// batch was taken, so its records were appended before the sync that follows
/// starts; one fdatasync therefore covers the whole batch. While it runs,
/// appenders keep writing and queueing, which forms the next batch.
pub(crate) fn run(shared: Arc<Shared>) {
    while let Some(batch) = shared.flush_queue.take_batch() {
        let result = shared.sync_appended();
        for done in batch {
            let result = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(e.duplicate()),
            };
            // A panicking callback must not take group commit down for every
            // other caller; the panic hook has already reported it.
            if panic::catch_unwind(AssertUnwindSafe(|| done(result))).is_err() {
                tracing::error!("a write-ahead log flush callback panicked");
            }
        }
    }
}
