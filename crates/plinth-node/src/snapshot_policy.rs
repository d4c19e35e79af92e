//! When a replica snapshots: once the log since the last snapshot is as large as it, or holds
//! more entries than a restart should replay for a state of its size. The ticker asks on every
//! replica, leader or not.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver;

use crate::node::Node;

/// How long a snapshot asked for may take to build before it is asked for again.
const SNAPSHOT_RETRY: Duration = Duration::from_secs(60);

/// A snapshot is due after this many `snapshot_logs_since_last` intervals whatever the log's
/// bytes, or, for a larger state, after one entry for every `SNAPSHOT_BYTES_PER_ENTRY` bytes of
/// the last snapshot.
const SNAPSHOT_ENTRIES_FACTOR: u64 = 10;

/// Replaying an entry at a restart costs about what encoding, writing and loading this many
/// bytes of snapshot does, so the entries a restart replays stay in proportion to the state it
/// loads: a 450 MB state is snapshotted every 1.8 million small entries, not every 100,000
/// (which, at 18,000 lock operations a second, had re-encoded it every 5 s).
const SNAPSHOT_BYTES_PER_ENTRY: u64 = 256;

impl Node {
    /// Triggers a snapshot if one is due: at least `snapshot_logs_since_last` entries applied
    /// since the last, and a log at least as large as it (see [`NodeConfig`]). The ticker asks
    /// this on every replica, leader or not.
    pub(crate) async fn maybe_snapshot(&self) {
        let (applied, last) = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow_watched();
            (
                m.last_applied.map_or(0, |l| l.index),
                m.snapshot.map_or(0, |l| l.index + 1),
            )
        };
        let entries = applied.saturating_sub(last);
        if entries < self.inner.cfg.snapshot_logs_since_last {
            return;
        }
        let appended = self.inner.log.appended_bytes();
        {
            let mut pending = self
                .inner
                .snapshot_pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some((index, asked_at, appended_then)) = *pending {
                if last > index {
                    // Built: the log it lets go of is what had been appended when it was asked.
                    self.inner
                        .snapshot_log_mark
                        .store(appended_then, Ordering::Relaxed);
                    *pending = None;
                } else if asked_at.elapsed() < SNAPSHOT_RETRY {
                    // Asked for and not built yet (openraft ignores a second ask meanwhile); a
                    // build that failed is asked for again after a while.
                    return;
                }
            }
        }
        let since = appended.saturating_sub(self.inner.snapshot_log_mark.load(Ordering::Relaxed));
        let due = snapshot_due(
            entries,
            since,
            self.inner.sm.snapshot_bytes() as u64,
            self.inner.cfg.snapshot_logs_since_last,
        );
        if !due {
            return;
        }
        match self.inner.raft.trigger().snapshot().await {
            Ok(()) => {
                *self
                    .inner
                    .snapshot_pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) =
                    Some((applied, Instant::now(), appended));
            }
            Err(e) => tracing::warn!(error = %e, "could not trigger a snapshot"),
        }
    }
}

/// Whether a snapshot is due, `entries` entries (at least `interval`) and `log_bytes` bytes of log
/// after a snapshot of `snapshot_bytes`: once the log is as large as the snapshot, or past a
/// number of entries whatever the bytes. A large state changed by small commands must not let
/// the log (and a restart's replay) grow without bound in entries; the number grows with the
/// state, whose every snapshot costs more.
fn snapshot_due(entries: u64, log_bytes: u64, snapshot_bytes: u64, interval: u64) -> bool {
    let overdue = entries
        >= interval
            .saturating_mul(SNAPSHOT_ENTRIES_FACTOR)
            .max(snapshot_bytes / SNAPSHOT_BYTES_PER_ENTRY);
    log_bytes >= snapshot_bytes || overdue
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    const MB: u64 = 1 << 20;

    #[test]
    fn a_snapshot_is_due_when_the_log_is_as_large_as_it_or_the_entries_are_many_for_its_size() {
        // A small state: the log's bytes decide, and past ten intervals the entries do.
        assert!(!snapshot_due(10_000, MB / 2, MB, 10_000));
        assert!(snapshot_due(10_000, MB, MB, 10_000));
        assert!(snapshot_due(100_000, 0, MB, 10_000));
        // A 450 MB state changed by small commands: not every 100,000 entries, but every
        // 1.8 million (one for every 256 bytes of it).
        let large = 450 * MB;
        assert!(!snapshot_due(100_000, 15 * MB, large, 10_000));
        assert!(!snapshot_due(1_800_000, 270 * MB, large, 10_000));
        assert!(snapshot_due(1_850_000, 277 * MB, large, 10_000));
        assert!(snapshot_due(200_000, large, large, 10_000));
    }
}
