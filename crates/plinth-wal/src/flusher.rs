//! Group commit: the queue of flush callbacks, the thread that serves them with shared fsyncs,
//! and [`IdleSync`], which lets the threads of an async runtime serve them when they go idle.

use std::cell::{Cell, RefCell};
use std::mem;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::time::{Duration, Instant};

use crate::WalError;
use crate::wal::{Shared, Wal};

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
    /// A batch is being synced and called back, by the flusher or by an idle thread. Batches
    /// are served one at a time, so callbacks run in the order they were queued.
    serving: bool,
    /// The flusher waits on `wakeup`: only then does a push need to wake it (a notify is a
    /// system call even with nobody waiting).
    flusher_waiting: bool,
    shutdown: bool,
}

impl FlushQueue {
    /// Queues `done`, and wakes the flusher for it unless `defer_wake`; if the flusher already
    /// stopped, `done` gets `Closed` at once.
    fn push(&self, done: FlushCallback, defer_wake: bool) {
        let mut pending = self.lock();
        if pending.shutdown {
            drop(pending);
            done(Err(WalError::Closed));
            return;
        }
        pending.callbacks.push(done);
        let wake = !defer_wake && pending.flusher_waiting && !pending.serving;
        drop(pending);
        if wake {
            self.wakeup.notify_one();
        }
    }

    /// Wakes the flusher if it waits while callbacks are queued and nobody serves them.
    fn wake_if_queued(&self) {
        let pending = self.lock();
        let wake = pending.flusher_waiting && !pending.serving && !pending.callbacks.is_empty();
        drop(pending);
        if wake {
            self.wakeup.notify_one();
        }
    }

    /// Asks the flusher to serve what is queued and then exit.
    pub(crate) fn shut_down(&self) {
        self.lock().shutdown = true;
        self.wakeup.notify_one();
    }

    /// Blocks until callbacks are queued and no other thread is serving a batch, then takes
    /// them; `None` once shut down and drained.
    fn take_batch(&self) -> Option<Vec<FlushCallback>> {
        let mut pending = self.lock();
        loop {
            if !pending.serving {
                if !pending.callbacks.is_empty() {
                    pending.serving = true;
                    return Some(mem::take(&mut pending.callbacks));
                }
                if pending.shutdown {
                    return None;
                }
            }
            pending.flusher_waiting = true;
            pending = self
                .wakeup
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
            pending.flusher_waiting = false;
        }
    }

    /// Takes what is queued if nobody is serving a batch; never blocks.
    fn try_take_batch(&self) -> Option<Vec<FlushCallback>> {
        let mut pending = self.lock();
        if pending.serving || pending.callbacks.is_empty() || pending.shutdown {
            return None;
        }
        pending.serving = true;
        Some(mem::take(&mut pending.callbacks))
    }

    /// The batch taken last has been served; wakes the flusher if more are queued.
    fn served(&self) {
        let mut pending = self.lock();
        pending.serving = false;
        let wake = pending.flusher_waiting && (!pending.callbacks.is_empty() || pending.shutdown);
        drop(pending);
        if wake {
            self.wakeup.notify_one();
        }
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
        serve(&shared, batch, || shared.sync_appended());
    }
}

/// How long a runtime thread that queued a callback may stay busy before the flusher is woken
/// for it after all: about half a fsync here, so a thread that does not go idle soon delays the
/// sync by little.
const WAKE_DEFERRED_MAX: Duration = Duration::from_micros(50);

thread_local! {
    /// The log whose batch this thread is serving, if any: a callback that waits for that log's
    /// sync would wait for itself.
    static SERVING: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
    /// Whether this is a runtime thread that serves queues when it goes idle (it has been idle
    /// once): its callbacks do not wake the flusher at once.
    static DEFERS: Cell<bool> = const { Cell::new(false) };
    /// The queues this thread left its callbacks on without waking their flusher, and since
    /// when.
    static OWED: RefCell<Owed> = const { RefCell::new(Owed { since: None, queues: Vec::new() }) };
}

struct Owed {
    since: Option<Instant>,
    queues: Vec<Weak<Shared>>,
}

/// Queues `done` on `shared`'s flush queue (see [`Wal::flush_then`]). If `may_defer`, from a
/// runtime thread that serves queues when idle, the flusher is not woken: the thread serves the
/// queue itself when it runs out of work, or wakes the flusher if it is still busy
/// `WAKE_DEFERRED_MAX` later ([`IdleSync::after_task`]). A caller that will block until `done`
/// runs must not defer.
pub(crate) fn queue(shared: &Arc<Shared>, done: FlushCallback, may_defer: bool) {
    let defer = may_defer && DEFERS.with(Cell::get);
    shared.flush_queue.push(done, defer);
    if defer {
        OWED.with(|owed| {
            let mut owed = owed.borrow_mut();
            owed.since.get_or_insert_with(Instant::now);
            let known = owed
                .queues
                .iter()
                .any(|q| std::ptr::eq(q.as_ptr(), Arc::as_ptr(shared)));
            if !known {
                owed.queues.push(Arc::downgrade(shared));
            }
        });
    }
}

/// Wakes the flushers this thread owes a wake-up, if `due`.
fn pay_owed(due: impl FnOnce(Instant) -> bool) {
    OWED.with(|owed| {
        let mut owed = owed.borrow_mut();
        let Some(since) = owed.since else { return };
        if !due(since) {
            return;
        }
        owed.since = None;
        for queue in owed.queues.drain(..) {
            if let Some(shared) = queue.upgrade() {
                shared.flush_queue.wake_if_queued();
            }
        }
    });
}

/// Whether the calling thread is running `shared`'s flush callbacks (on its flusher or an idle
/// thread).
pub(crate) fn serving_here(shared: &Shared) -> bool {
    SERVING.with(|serving| std::ptr::eq(serving.get(), shared))
}

/// Serves `batch`, taken from `shared`'s queue: syncs once with `sync` and calls the batch back
/// with the result, in order; then lets the next batch be taken.
fn serve(shared: &Shared, batch: Vec<FlushCallback>, sync: impl FnOnce() -> Result<(), WalError>) {
    let _serving = Serving::start(shared);
    let result = sync();
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

/// This thread serving a batch of `shared`'s. When dropped, also by a panic, the thread no
/// longer counts as serving and the next batch may be taken.
struct Serving<'a> {
    shared: &'a Shared,
    outer: *const Shared,
}

impl<'a> Serving<'a> {
    fn start(shared: &'a Shared) -> Serving<'a> {
        let outer = SERVING.with(|serving| serving.replace(shared));
        Serving { shared, outer }
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        SERVING.with(|serving| serving.set(self.outer));
        self.shared.flush_queue.served();
    }
}

/// Lets a thread about to go idle serve the flush callbacks queued on some logs itself, instead
/// of handing them to their flusher threads.
///
/// An async runtime calls [`IdleSync::on_idle`] from its threads' park hook (tokio's
/// `on_thread_park`). A thread parks only when it has nothing left to run, so the fdatasync
/// delays no work of its own; and when the calls that wait for it are all there is (a few
/// writers, each waiting for its write), the sync and its callbacks run without the two thread
/// hand-offs, to the flusher and back, that cost each such round a wake-up of a sleeping thread
/// on another core. While a runtime thread stays busy, the flusher serves the queue as before.
/// Only one thread serves a log's queue at a time, so callbacks still run in queue order.
#[derive(Clone, Default)]
pub struct IdleSync {
    logs: Arc<Mutex<Vec<Weak<Shared>>>>,
}

impl IdleSync {
    /// Adds `wal`; it is dropped from the list when the log closes.
    pub fn add(&self, wal: &Wal) {
        let mut logs = self.lock();
        logs.retain(|log| log.strong_count() > 0);
        logs.push(Arc::downgrade(wal.shared()));
    }

    /// For the runtime's park hook: serves, on the calling thread, what each log has queued
    /// and no thread is serving yet (skipped if another thread is at it). From then on this
    /// thread's callbacks do not wake the flusher at once, if the runtime also calls
    /// [`IdleSync::after_task`].
    pub fn on_idle(&self, defer_wakes: bool) {
        DEFERS.with(|defers| defers.set(defer_wakes));
        if let Some(logs) = match self.logs.try_lock() {
            Ok(logs) => Some(logs),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        } {
            for log in logs.iter() {
                let Some(shared) = log.upgrade() else {
                    continue;
                };
                // The state's read lock first, not waited for: a purge or a truncation may
                // hold it for the length of a file operation, and this is an async thread.
                // Skipped logs are left to their flusher.
                let Some(state) = shared.try_read_state() else {
                    continue;
                };
                let Some(batch) = shared.flush_queue.try_take_batch() else {
                    continue;
                };
                serve(&shared, batch, || shared.sync_appended_under(state));
            }
        }
        // What this thread queued is served, or being served by a thread that wakes the
        // flusher for whatever it leaves.
        pay_owed(|_| true);
    }

    /// For the runtime's after-poll hook: wakes the flushers of the callbacks this thread
    /// queued over `WAKE_DEFERRED_MAX` ago, since it has not gone idle since.
    pub fn after_task() {
        pay_owed(|since| since.elapsed() >= WAKE_DEFERRED_MAX);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Weak<Shared>>> {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for IdleSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleSync")
            .field("logs", &self.lock().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    use super::IdleSync;
    use crate::{Wal, WalOptions};

    #[test]
    fn an_idle_thread_leaves_a_log_whose_state_is_locked_to_its_flusher() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path(), WalOptions::default()).expect("open");
        let idle = IdleSync::default();
        idle.add(&wal);
        let (appended_tx, appended) = mpsc::channel();
        let (go_tx, go) = mpsc::channel::<()>();
        let (served_tx, served) = mpsc::channel();
        let (returned_tx, returned) = mpsc::channel();
        let runtime_thread = thread::spawn({
            let (wal, idle) = (wal.clone(), idle.clone());
            move || {
                // Once idle, this thread defers its callbacks' wake-ups to its next idle turn.
                idle.on_idle(true);
                wal.append(&[(1, b"one")]).expect("append");
                wal.flush_then(Box::new(move |result| {
                    served_tx
                        .send((thread::current().id(), result.is_ok()))
                        .expect("send");
                }));
                appended_tx.send(()).expect("send");
                go.recv().expect("go");
                idle.on_idle(true);
                returned_tx.send(thread::current().id()).expect("send");
            }
        });
        appended.recv().expect("appended");
        // As a purge or a truncation does while it removes files.
        let locked = wal.shared().write_state().expect("state lock");
        go_tx.send(()).expect("send");
        let runtime_id = returned
            .recv_timeout(Duration::from_secs(10))
            .expect("the idle turn returned without waiting for the state lock");
        assert!(
            served.try_recv().is_err(),
            "nothing was synced under the lock"
        );
        drop(locked);
        let (on, ok) = served
            .recv_timeout(Duration::from_secs(10))
            .expect("the flusher served the callback");
        assert!(ok);
        assert_ne!(
            on, runtime_id,
            "the flusher, woken by the idle turn, served it"
        );
        runtime_thread.join().expect("join");
    }
}
