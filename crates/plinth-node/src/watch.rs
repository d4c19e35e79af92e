//! Watch fan-out: a Watcher delivers every KV event after a revision that matches its span, in
//! order, with no gap and no duplicate, from history first and then live.
//!
//! How the two sources join without a gap: the watcher subscribes to the broadcast of applied
//! events *before* it reads history, so every event is either already in history when read or
//! still to come on the broadcast (or both). The state machine sends to the broadcast while it
//! holds the state's write lock, so when a reader holding the read lock finds its receiver empty,
//! every event up to the state's revision has reached it. Duplicates are dropped by revision: all
//! events of one revision are produced by one apply and travel together.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use plinth_core::Revision;
use plinth_core::kv::{Event, KeySpan, KvError, KvState};
use tokio::sync::broadcast;
use tokio::time::{Instant, Sleep};

use crate::error::WatchError;
use crate::state_machine::SmShared;

/// History is read in chunks of this many events, so a watcher far behind does not hold the state
/// lock (and stall applies) while it copies the whole history.
const HISTORY_CHUNK_EVENTS: usize = 1024;

/// What the state machine tells watchers.
#[derive(Clone, Debug)]
pub(crate) enum WatchMessage {
    /// The events of one applied command, all at `revision`.
    Applied {
        revision: Revision,
        events: Arc<[Event]>,
    },
    /// The state was replaced by a snapshot: live watchers must go back to history.
    Reset,
    /// The node is shutting down.
    Closed,
}

/// Events for a watcher. An empty `events` is a progress notice: nothing matched up to
/// `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub events: Vec<Event>,
    /// Every matching event up to and including this revision has been delivered.
    pub revision: Revision,
}

pub struct Watcher {
    span: KeySpan,
    /// Every matching event with a revision up to and including this one has been delivered.
    delivered: Revision,
    /// Following the broadcast rather than reading history.
    live: bool,
    rx: broadcast::Receiver<WatchMessage>,
    sm: Arc<SmShared>,
    progress_interval: Duration,
    /// When the last batch went out; a progress notice is due `progress_interval` after it.
    last_sent: Instant,
    /// Fires no later than the progress notice is due. It is set again only when it fires, not
    /// at every batch: a timer set per batch cost every watcher a trip through the runtime's
    /// timer wheel for every event.
    progress: Pin<Box<Sleep>>,
}

impl Watcher {
    /// Subscribes now; history is read by the first `next`.
    pub(crate) fn new(
        sm: Arc<SmShared>,
        span: KeySpan,
        after: Revision,
        progress_interval: Duration,
    ) -> Watcher {
        let rx = sm.subscribe();
        let now = Instant::now();
        Watcher {
            span,
            delivered: after,
            live: false,
            rx,
            sm,
            progress_interval,
            last_sent: now,
            progress: Box::pin(tokio::time::sleep_until(now + progress_interval)),
        }
    }

    /// The next events after those already delivered, or a progress notice after
    /// `watch_progress_interval` without any.
    pub async fn next(&mut self) -> Result<WatchBatch, WatchError> {
        loop {
            if self.sm.is_closed() {
                return Err(WatchError::ShuttingDown);
            }
            if !self.live {
                if let Some(batch) = self.read_history()? {
                    return Ok(self.sent(batch));
                }
                self.live = true;
                continue;
            }
            let message = tokio::select! {
                biased;
                message = self.rx.recv() => Ok(message),
                () = &mut self.progress => Err(()),
            };
            match message {
                Ok(Ok(WatchMessage::Applied { revision, events })) => {
                    if revision <= self.delivered {
                        continue;
                    }
                    self.delivered = revision;
                    let events: Vec<Event> = events
                        .iter()
                        .filter(|e| self.span.contains(&e.kv.key))
                        .cloned()
                        .collect();
                    if !events.is_empty() {
                        return Ok(self.sent(WatchBatch { events, revision }));
                    }
                }
                // Messages were dropped before this watcher read them: history still has them
                // (or says they were compacted).
                Ok(Err(broadcast::error::RecvError::Lagged(_))) | Ok(Ok(WatchMessage::Reset)) => {
                    tracing::debug!(delivered = %self.delivered, "watcher re-reads history");
                    self.live = false;
                }
                Ok(Ok(WatchMessage::Closed)) | Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(WatchError::ShuttingDown);
                }
                Err(()) => {
                    let due = self.last_sent + self.progress_interval;
                    if Instant::now() < due {
                        // Batches went out since the timer was set: it fires again when due.
                        self.progress.as_mut().reset(due);
                    } else if let Some(revision) = self.idle_revision() {
                        self.delivered = self.delivered.max(revision);
                        let notice = self.sent(WatchBatch {
                            events: Vec::new(),
                            revision,
                        });
                        self.progress
                            .as_mut()
                            .reset(self.last_sent + self.progress_interval);
                        return Ok(notice);
                    }
                    // Otherwise messages are waiting: the next recv returns at once, and the
                    // timer, left fired, brings the notice as soon as they are read if none of
                    // them matches.
                }
            }
        }
    }

    fn sent(&mut self, batch: WatchBatch) -> WatchBatch {
        self.last_sent = Instant::now();
        batch
    }

    /// The revision a progress notice may claim: the state's, provided nothing is waiting in the
    /// receiver (events are broadcast under the write lock, so none can be in flight). A watch
    /// from a revision the state has not reached yet is told the state's revision, never one
    /// that does not exist.
    fn idle_revision(&self) -> Option<Revision> {
        let data = self.sm.read();
        self.rx.is_empty().then(|| data.state.revision())
    }

    /// The next matching events from history, or `None` once history holds nothing after
    /// `delivered` (the watcher then follows the broadcast).
    fn read_history(&mut self) -> Result<Option<WatchBatch>, WatchError> {
        loop {
            let chunk = {
                let data = self.sm.read();
                let chunk =
                    whole_revisions_after(data.state.kv(), self.delivered, HISTORY_CHUNK_EVENTS)?;
                if chunk.is_empty() {
                    // Everything up to the state's revision is in history and has been read;
                    // anything later is still to come on the broadcast, subscribed before.
                    self.delivered = self.delivered.max(data.state.revision());
                    return Ok(None);
                }
                chunk
            };
            let last = chunk
                .last()
                .map(Event::revision)
                .expect("chunk is not empty");
            self.delivered = last;
            let events: Vec<Event> = chunk
                .into_iter()
                .filter(|e| self.span.contains(&e.kv.key))
                .collect();
            if !events.is_empty() {
                return Ok(Some(WatchBatch {
                    events,
                    revision: last,
                }));
            }
        }
    }
}

/// Up to about `max` events after `after`, ending on a whole revision so the next read (after the
/// last revision returned) misses none of its events. A single revision larger than `max` is
/// returned whole.
fn whole_revisions_after(
    kv: &KvState,
    after: Revision,
    max: usize,
) -> Result<Vec<Event>, WatchError> {
    let mut max = max;
    loop {
        let mut events = kv.events_after(after, max).map_err(|e| match e {
            KvError::Compacted {
                compacted_revision, ..
            } => WatchError::Compacted { compacted_revision },
            other => unreachable!("events_after refuses only with Compacted, not {other:?}"),
        })?;
        if events.len() < max {
            return Ok(events);
        }
        let last = events.last().map(Event::revision).expect("max events");
        let whole = events.partition_point(|e| e.revision() < last);
        if whole > 0 {
            events.truncate(whole);
            return Ok(events);
        }
        max = max.saturating_mul(2);
    }
}
