//! KeepAlive: a background task that keeps a lease alive and says when it is lost.

use crate::client::Client;
use crate::error::Code;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Keeps a lease alive until dropped. It renews at a third of the ttl, so two renewals may fail
/// (a restart, an election) before the lease is at risk; if the server says the lease is gone, or
/// no renewal succeeds before the ttl has passed, the lease is reported lost and renewal stops.
pub struct KeepAlive {
    id: u64,
    lost: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl KeepAlive {
    pub(crate) fn start(client: Client, id: u64, ttl: Duration) -> KeepAlive {
        let (lost_tx, lost) = watch::channel(false);
        let task = tokio::spawn(async move {
            let period = (ttl / 3).max(Duration::from_millis(50));
            let mut last_ok = Instant::now();
            loop {
                tokio::time::sleep(period).await;
                match client.lease_keep_alive(id).await {
                    Ok(_) => last_ok = Instant::now(),
                    Err(e) if e.code == Code::NotFound => break,
                    Err(e) => {
                        tracing::warn!(lease = id, error = %e, "lease keep-alive failed; retrying");
                        if last_ok.elapsed() >= ttl {
                            break;
                        }
                    }
                }
            }
            let _ = lost_tx.send(true);
        });
        KeepAlive { id, lost, task }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Resolves once the lease is lost (expired, revoked, or unreachable for a whole ttl).
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}
